package sink

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// The record sinks (Log Analytics, Splunk) send versions as rows or events
// in batches, one request for many versions, and have no overwrite: a
// version sent again (a run killed after its batch was accepted and before
// its checkpoint was saved) is a second row. Each carries VersionID, so a
// query keeps one row per version; DESIGN and the README give the queries.

// errTooLarge is a request the service refused for its size (HTTP 413).
var errTooLarge = errors.New("request too large for the service")

// defaultMaxBytes bounds a request's body: the Logs Ingestion API's limit
// (1 MB), and Splunk Cloud's default max_content_length.
const defaultMaxBytes = 1 << 20

// split cuts records into batches whose encoding (overhead once, sep
// between records) stays within limit bytes, in order. A record larger
// than limit is an error, unless alone: then it is a batch of its own,
// for the service's own limit to decide (a collector's may be larger than
// the one configured here).
func split(recs [][]byte, limit, overhead, sep int, alone bool) ([][][]byte, error) {
	var out [][][]byte
	var cur [][]byte
	size := overhead
	for _, r := range recs {
		if overhead+len(r) > limit {
			if !alone {
				return nil, fmt.Errorf("sink: one version encodes to %d bytes, more than a request may carry (%d)", len(r), limit)
			}
			if len(cur) > 0 {
				out = append(out, cur)
			}
			out, cur, size = append(out, [][]byte{r}), nil, overhead
			continue
		}
		add := len(r)
		if len(cur) > 0 {
			add += sep
		}
		if size+add > limit {
			out = append(out, cur)
			cur, size, add = nil, overhead, len(r)
		}
		cur = append(cur, r)
		size += add
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out, nil
}

// sendHalving sends a batch; a batch the service refuses as too large
// (its limit may be set lower than ours) is sent again as two halves.
func sendHalving(ctx context.Context, batch [][]byte, send func(context.Context, [][]byte) error) error {
	err := send(ctx, batch)
	if !errors.Is(err, errTooLarge) {
		return err
	}
	if len(batch) == 1 {
		return fmt.Errorf("sink: the service refused one version of %d bytes as too large (HTTP 413): raise its request size limit", len(batch[0]))
	}
	h := len(batch) / 2
	if err := sendHalving(ctx, batch[:h], send); err != nil {
		return err
	}
	return sendHalving(ctx, batch[h:], send)
}

// retryable says whether a request that got this status may succeed later.
func retryable(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// backoff is the wait before retry n (from 0): the service's Retry-After
// when it gave one, else base doubled per retry up to a cap, with jitter.
func backoff(n int, base time.Duration, resp *http.Response) time.Duration {
	if resp != nil {
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			return min(time.Duration(s)*time.Second, 5*time.Minute)
		}
		if t, err := http.ParseTime(resp.Header.Get("Retry-After")); err == nil {
			return min(max(time.Until(t), 0), 5*time.Minute)
		}
	}
	d := min(base<<n, 30*time.Second)
	return d/2 + rand.N(d/2+1)
}

// sleep waits d unless ctx ends first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
