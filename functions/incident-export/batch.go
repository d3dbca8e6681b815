package incidentexport

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/defender-functions/defender-functions/shared/defender"
	"github.com/defender-functions/defender-functions/shared/sink"
	"github.com/defender-functions/defender-functions/shared/telemetry"
)

// The batched layout: the versions a run reads between two checkpoints are
// one object, gzip-compressed NDJSON, beside a small manifest, so that an
// object-store collector (Splunk's, Elastic's, Sentinel's) reads a few large
// objects instead of one per version. Its name cannot be derived from its
// versions (a window read again after a crash holds other versions, as
// incidents change), so the checkpoint names it before it is written:
//
//  1. the checkpoint as last saved, plus Pending: the object's name, the
//     versions in it and where the checkpoint moves with it;
//  2. the object, then its manifest (and the sink's sync);
//  3. the checkpoint moved past the batch, Pending cleared.
//
// A run that finds a Pending batch asks the sink whether its object is
// there (an object is stored whole or not at all): if so the versions in it
// are written, and the checkpoint moves with them; if not, nothing of it
// was written and its versions are read again. So a version is in one
// object, once, and no object is ever rewritten with other contents.

// Pending is a batch being written when the checkpoint was saved.
type Pending struct {
	Object   string    `json:"object"`
	Manifest string    `json:"manifest"`
	Seq      int64     `json:"seq"`
	Since    time.Time `json:"since"` // the checkpoint's Since once the batch is written
	Versions []Version `json:"versions"`
	Bytes    int64     `json:"bytes"`
	SHA256   string    `json:"sha256"`
	Created  time.Time `json:"created"`
}

// Manifest describes one batch object.
type Manifest struct {
	Object   string `json:"object"`
	Tenant   string `json:"tenant"`
	Seq      int64  `json:"seq"`
	Versions int    `json:"versions"`
	// Bytes and SHA256 are the object's, as stored (compressed).
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
	// First and Last bound the versions' lastUpdateDateTime.
	First   time.Time `json:"firstLastUpdate"`
	Last    time.Time `json:"lastLastUpdate"`
	Created time.Time `json:"created"`
	Format  string    `json:"format"`
}

// batchMaxBytes cuts a batch early: its compressed size bounds the run's
// memory (the versions' JSON compresses some tenfold).
const batchMaxBytes = 16 << 20

// batch is what a batched run has read since its last commit.
type batch struct {
	buf      bytes.Buffer
	zw       *gzip.Writer
	versions []Version
	pending  *Pending // named, and in a saved checkpoint, until written
}

func (b *batch) add(in *defender.Incident) {
	if b.zw == nil {
		b.zw, _ = gzip.NewWriterLevel(&b.buf, gzip.BestSpeed)
	}
	b.zw.Write(in.Raw)
	b.zw.Write([]byte{'\n'})
	b.versions = append(b.versions, Version{ID: in.ID, LastUpdate: in.LastUpdate})
}

func (b *batch) full() bool { return b.buf.Len() >= batchMaxBytes }

// batchNames are a batch's object and manifest: ordered by time and by
// the tenant's batch sequence, made unique by a random part (an object
// named by a run that died before writing it is never reused).
func batchNames(tenant string, seq int64, at time.Time) (object, manifest string) {
	r := make([]byte, 4)
	rand.Read(r)
	at = at.UTC()
	base := fmt.Sprintf("%s/%s/%s_%08d_%s", tenant, at.Format("2006/01/02"), at.Format("20060102T150405Z"), seq, hex.EncodeToString(r))
	return base + ".ndjson.gz", "_manifests/" + base + ".json"
}

// commitBatch writes the batch as one object and its manifest, named in a
// saved checkpoint first; commit then saves the checkpoint past it.
func (r *run) commitBatch(ctx context.Context) error {
	b := &r.batch
	if len(b.versions) == 0 {
		return nil
	}
	if b.pending == nil {
		b.zw.Close()
		sum := sha256.Sum256(b.buf.Bytes())
		now := r.e.now()
		p := &Pending{Seq: r.cp.Batches + 1, Since: r.cp.Since, Versions: b.versions, Bytes: int64(b.buf.Len()), SHA256: hex.EncodeToString(sum[:]), Created: now.UTC()}
		p.Object, p.Manifest = batchNames(r.t.Name, p.Seq, now)
		b.pending = p
	}
	p := b.pending
	r.log.Info("Writing a batch.", "object", p.Object, "versions", len(p.Versions))
	// 1. The checkpoint as last saved, naming the batch.
	var cp Checkpoint
	if err := json.Unmarshal(r.saved, &cp); err != nil {
		return err
	}
	cp.Pending = p
	if err := r.put(ctx, &cp); err != nil {
		return err
	}
	// 2. The object, its manifest, made durable.
	wctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), r.hard)
	defer cancel()
	m := manifest(r.t.Name, p)
	mb, _ := json.MarshalIndent(m, "", "  ")
	for _, o := range []sink.Object{{Name: p.Object, Data: b.buf.Bytes()}, {Name: p.Manifest, Data: append(mb, '\n')}} {
		if err := r.e.Sink.Write(wctx, []sink.Object{o}); err != nil {
			return &sinkError{fmt.Errorf("writing batch to %s: %w", r.e.Sink, err)}
		}
	}
	if s, ok := r.e.Sink.(sink.Syncer); ok {
		if err := s.Sync(wctx); err != nil {
			return fmt.Errorf("syncing %s: %w", r.e.Sink, err)
		}
	}
	r.cp.Batches = p.Seq
	telemetry.VersionsWritten(ctx, r.t.Name, len(p.Versions))
	r.log.Info("Batch written.", "object", p.Object, "versions", len(p.Versions), "bytes", p.Bytes)
	*b = batch{}
	return nil
}

func manifest(tenant string, p *Pending) Manifest {
	m := Manifest{Object: p.Object, Tenant: tenant, Seq: p.Seq, Versions: len(p.Versions), Bytes: p.Bytes, SHA256: p.SHA256, Created: p.Created,
		Format: "ndjson+gzip: one incident version per line, as the API returned it, alerts included"}
	for i, v := range p.Versions {
		if i == 0 || v.LastUpdate.Before(m.First) {
			m.First = v.LastUpdate
		}
		if v.LastUpdate.After(m.Last) {
			m.Last = v.LastUpdate
		}
	}
	return m
}

// settlePending resolves a batch a run was writing when it stopped: its
// object is there (then its versions are written and the checkpoint moves
// with them, and its manifest is written again in case it was not) or not
// (then they are read again).
func (r *run) settlePending(ctx context.Context) error {
	p := r.cp.Pending
	r.cp.Pending = nil
	ex, ok := r.e.Sink.(sink.Exister)
	if !ok {
		return fmt.Errorf("checkpoint %s names batch %s, and %s cannot say whether it was written", r.key(), p.Object, r.e.Sink)
	}
	there, err := ex.Exists(ctx, p.Object)
	if err != nil {
		return err
	}
	r.dirty = true
	if !there {
		r.log.Info("The last run stopped before writing its batch; its versions are read again.", "object", p.Object, "versions", len(p.Versions))
		return nil
	}
	mb, _ := json.MarshalIndent(manifest(r.t.Name, p), "", "  ")
	if err := r.e.Sink.Write(ctx, []sink.Object{{Name: p.Manifest, Data: append(mb, '\n')}}); err != nil {
		return fmt.Errorf("writing manifest to %s: %w", r.e.Sink, err)
	}
	for _, v := range p.Versions {
		r.recent[versionKey{v.ID, v.LastUpdate.UnixNano()}] = v.LastUpdate
	}
	if p.Since.After(r.cp.Since) {
		r.settle(p.Since)
	}
	r.cp.Batches = max(r.cp.Batches, p.Seq)
	r.cp.Written += int64(len(p.Versions))
	r.log.Info("The last run wrote its batch before it stopped; its versions count as written.", "object", p.Object, "versions", len(p.Versions))
	return nil
}
