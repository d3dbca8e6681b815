package incidentexport

// The prefetch: the next page is fetched while this one is written.

import (
	"context"
	"iter"

	"github.com/defender-functions/defender-functions/shared/defender"
)

type fetched struct {
	page *defender.Page
	err  error
}

// ahead runs a listing one page ahead of its reader once proceed is
// closed, so the API and the sink work at once; until then it stops after
// the first page (whose reader may not want the next).
func ahead(ctx context.Context, proceed <-chan struct{}, list func(context.Context) iter.Seq2[*defender.Page, error]) iter.Seq2[*defender.Page, error] {
	return func(yield func(*defender.Page, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		ch := make(chan fetched) // unbuffered: one page in flight while one is read
		go func() {
			defer close(ch)
			first := true
			for p, err := range list(ctx) {
				select {
				case ch <- fetched{p, err}:
				case <-ctx.Done():
					return
				}
				if err != nil {
					return
				}
				if first {
					first = false
					select {
					case <-proceed:
					case <-ctx.Done():
						return
					}
				}
			}
		}()
		defer func() {
			cancel()
			for range ch {
			}
		}()
		for f := range ch {
			if !yield(f.page, f.err) || f.err != nil {
				return
			}
		}
	}
}
