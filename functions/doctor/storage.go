package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	incidentexport "github.com/defender-functions/defender-functions/functions/incident-export"
	"github.com/defender-functions/defender-functions/shared/advice"
	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/queue"
	"github.com/defender-functions/defender-functions/shared/sink"
	"github.com/defender-functions/defender-functions/shared/state"
)

// storage: 6. where the functions write, the state store and the sink.
func (k *checkup) storage() {
	r, cfg := k.r, k.cfg
	blob, err := functions.BlobOptions(cfg, k.o.HTTPClient)
	if err != nil {
		r.fail("storage", err, advice.Say(advice.StorageIdentity, nil))
		return
	}
	if cfg.StateStore == "" {
		r.ok("state store", "not set (%s): incident-export and ticket-webhook need it", config.EnvStateStore)
	} else {
		c, cancel := k.step()
		err := checkState(c, cfg.StateStore, blob)
		cancel()
		switch {
		case k.identityFailure(r, "state store", config.EnvStateStore, err):
		case err != nil:
			r.fail("state store", err, storageFix(config.EnvStateStore, cfg.StateStore))
		default:
			r.ok("state store", "%s is writable", config.RedactURL(cfg.StateStore))
		}
	}
	k.sink(blob)
}

// sink: the export's sink takes what the export writes. With the export's
// own settings wrong (config above) it is not opened: what it would open
// is not what the settings mean.
func (k *checkup) sink(blob state.BlobOptions) {
	r, cfg := k.r, k.cfg
	switch kind, _ := config.ClassifySink(cfg.ExportSink); {
	case cfg.ExportSink == "":
		r.ok("sink", "not set (%s): incident-export is off", config.EnvExportSink)
		return
	case len(cfg.GroupProblems[incidentexport.Function.Settings]) > 0:
		r.skip("sink", incidentexport.Function.Name+"'s settings are not right yet (config above)")
		return
	case kind == config.SinkLogs || kind == config.SinkSplunk:
		k.siemSink(kind, blob)
		return
	}
	c, cancel := k.step()
	err := checkSink(c, cfg, k.o.HTTPClient, blob)
	cancel()
	switch {
	case k.identityFailure(r, "sink", config.EnvExportSink, err):
	case err != nil:
		r.fail("sink", err, storageFix(config.EnvExportSink, cfg.ExportSink))
	default:
		r.ok("sink", "%s is writable (wrote _doctor/check.json)", config.RedactURL(cfg.ExportSink))
	}
}

// queue: the export's fan-out queue reachable, and its poison queue empty:
// a task there is a tenant that failed on every delivery and is no longer
// exported. It reads without taking anything.
func (k *checkup) queue() {
	r, cfg := k.r, k.cfg
	switch {
	case cfg.ExportQueue == "":
		return
	case config.ExportQueueIsSQS(cfg.ExportQueue):
		k.sqsQueue()
		return
	}
	blob, err := functions.BlobOptions(cfg, k.o.HTTPClient)
	if err != nil {
		r.fail("queue", err, advice.Say(advice.StorageIdentity, nil))
		return
	}
	open := func(name string) (*queue.Azure, error) { return functions.AzureQueue(cfg, name, blob) }
	q, err := open(cfg.ExportQueue)
	if err != nil {
		r.fail("queue", err, "")
		return
	}
	c, cancel := k.step()
	waiting, err := q.Peek(c, 32)
	cancel()
	if k.identityFailure(r, "queue", config.EnvExportQueue, err) {
		return
	}
	if err != nil {
		r.fail("queue", err, advice.Say(advice.QueueRoles, advice.Vars{"queue": cfg.ExportQueue}))
		return
	}
	r.ok("queue", "%s is reachable: %s waiting", cfg.ExportQueue, plural(len(waiting), "task", 32))
	p, err := open(cfg.ExportQueue + "-poison")
	if err != nil {
		r.fail("queue", err, "")
		return
	}
	c, cancel = k.step()
	dead, err := p.Peek(c, 32)
	cancel()
	switch {
	case err != nil:
		r.fail("queue", fmt.Errorf("%s-poison: %w", cfg.ExportQueue, err), "")
	case len(dead) == 0:
		r.ok("queue", "%s-poison is empty: no tenant failed on every delivery", cfg.ExportQueue)
	default:
		var lines []string
		for _, m := range dead {
			tenant := "(not a task: " + strconv.Quote(string(m.Body[:min(len(m.Body), 80)])) + ")"
			var task struct {
				Tenant string `json:"tenant"`
			}
			if json.Unmarshal(m.Body, &task) == nil && task.Tenant != "" {
				tenant = "tenant " + task.Tenant
			}
			lines = append(lines, fmt.Sprintf("%s, enqueued %s", tenant, m.InsertedAt.UTC().Format(time.RFC3339)))
		}
		r.fail("queue", fmt.Errorf("%s in %s-poison, no longer exported: %s", plural(len(dead), "task", 32), cfg.ExportQueue, strings.Join(lines, "; ")),
			advice.Say(advice.PoisonTasks, advice.Vars{"queue": cfg.ExportQueue}))
	}
}

// sqsQueue: the SQS queue reachable, with a dead-letter queue, and that
// queue empty. It reads attributes only: a receive would count as a
// delivery, so the tasks' tenants are not named (the log lines name them).
func (k *checkup) sqsQueue() {
	r, cfg := k.r, k.cfg
	q, err := queue.NewSQS(cfg.ExportQueue, cfg.S3Region)
	if err != nil {
		r.fail("queue", err, "")
		return
	}
	c, cancel := k.step()
	st, err := q.Status(c)
	cancel()
	switch {
	case err != nil:
		r.fail("queue", err, advice.Say(advice.SQSUnreachable, nil))
		return
	case st.DeadLetterQueue == "":
		r.ok("queue", "%s is reachable: %s waiting", cfg.ExportQueue, plural(st.Waiting, "task", 0))
		r.fail("queue", fmt.Errorf("%s has no redrive policy: a tenant that keeps failing is delivered again until its task expires, and no dead-letter queue shows it", cfg.ExportQueue),
			advice.Say(advice.SQSNoRedrive, nil))
		return
	}
	r.ok("queue", "%s is reachable: %s waiting; after %d receives a task goes to %s", cfg.ExportQueue, plural(st.Waiting, "task", 0), st.MaxReceiveCount, st.DeadLetterQueue)
	if st.DeadLetters == 0 {
		r.ok("queue", "%s is empty: no tenant failed on every delivery", st.DeadLetterQueue)
		return
	}
	r.fail("queue", fmt.Errorf("%s in %s, no longer exported", plural(st.DeadLetters, "task", 0), st.DeadLetterQueue),
		advice.Say(advice.SQSDeadLetters, advice.Vars{"queue": cfg.ExportQueue}))
}

// plural says n things, "32 or more" at a peek's limit (0: none).
func plural(n int, thing string, limit int) string {
	s := fmt.Sprintf("%d %s", n, thing)
	if n != 1 {
		s += "s"
	}
	if limit > 0 && n >= limit {
		s = fmt.Sprintf("%d or more %ss", n, thing)
	}
	return s
}

func checkState(ctx context.Context, raw string, blob state.BlobOptions) error {
	st, err := state.Open(raw, blob)
	if err != nil {
		return err
	}
	const key = "doctor/check"
	_, ver, err := st.Get(ctx, key)
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return err
	}
	data := []byte(`{"checkedAt":"` + time.Now().UTC().Format(time.RFC3339) + `"}`)
	if _, err := st.Put(ctx, key, data, ver); err != nil {
		return err
	}
	return st.Delete(ctx, key)
}

func checkSink(ctx context.Context, cfg *config.Config, hc *http.Client, blob state.BlobOptions) error {
	sk, err := functions.Sink(cfg, hc, blob, nil)
	if err != nil {
		return err
	}
	if c, ok := sk.(sink.Checker); ok {
		return c.Check(ctx) // a SIEM keeps every row: write none
	}
	if err := sk.Write(ctx, []sink.Object{{Name: "_doctor/check.json", Data: []byte(`{"checkedAt":"` + time.Now().UTC().Format(time.RFC3339) + `"}`)}}); err != nil {
		return err
	}
	if cfg.ExportBatched {
		// After a crash the export asks whether its batch landed: an
		// absent object must read as absent, not as forbidden.
		ex, _ := sk.(sink.Exister)
		if there, err := ex.Exists(ctx, "_doctor/absent.json"); err != nil || there {
			return fmt.Errorf("%s=batches needs to read back what it writes, and asking for an absent object failed (%v): %s", config.EnvExportLayout, err, advice.Say(advice.SinkReadBack, nil))
		}
	}
	if s, ok := sk.(sink.Syncer); ok {
		return s.Sync(ctx)
	}
	return nil
}
