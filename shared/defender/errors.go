package defender

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/defender-functions/defender-functions/shared/advice"
)

// Sentinels for errors.Is on an *APIError.
var (
	ErrNotFound          = errors.New("not found")
	ErrForbidden         = errors.New("forbidden")
	ErrUnauthorized      = errors.New("unauthorized")
	ErrThrottled         = errors.New("throttled")
	ErrBadRequest        = errors.New("bad request")
	ErrResultTooLarge    = errors.New("result too large")
	ErrUnavailable       = errors.New("service unavailable")
	ErrForeignNextLink   = errors.New("nextLink leaves the configured API origin")
	ErrResponseTooLarge  = errors.New("response larger than the client's limit")
	ErrIncompleteListing = errors.New("incomplete listing")
)

// APIError is an HTTP error from the Defender API, with the API's own code
// and message.
type APIError struct {
	API        string // graph or xdr
	Method     string
	Path       string // without the query
	StatusCode int
	Code       string
	Message    string
	RequestID  string
	// RetryAfter is the wait the API asked for (429, 503).
	RetryAfter time.Duration
	// MissingRoles are the roles a 403 names as required.
	MissingRoles []string
	// Advice says what to do, when there is something to say.
	Advice string
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s API: %s %s: HTTP %d", e.API, e.Method, e.Path, e.StatusCode)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	if e.Advice != "" {
		b.WriteString("; " + e.Advice)
	}
	if e.RequestID != "" {
		b.WriteString(" [request " + e.RequestID + "]")
	}
	return b.String()
}

// Is matches the sentinels.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.StatusCode == 404
	case ErrForbidden:
		return e.StatusCode == 403
	case ErrUnauthorized:
		return e.StatusCode == 401
	case ErrThrottled:
		return e.StatusCode == 429
	case ErrBadRequest:
		return e.StatusCode == 400
	case ErrResultTooLarge:
		return e.StatusCode == 400 && strings.Contains(e.Message, "exceeded the allowed result size")
	case ErrUnavailable:
		return e.StatusCode >= 500
	}
	return false
}

// apiAdvice says what to do about e, in the advice table's words, or ""
// where the status and message say it all.
func apiAdvice(e *APIError) string {
	switch {
	case e.StatusCode == 403 && len(e.MissingRoles) > 0:
		return advice.Say(advice.APIForbiddenRoles, advice.Vars{"roles": strings.Join(e.MissingRoles, " or ")})
	case e.StatusCode == 401:
		return advice.Say(advice.APIUnauthorized, nil)
	case e.StatusCode == 429:
		return advice.Say(advice.APIThrottled, nil)
	}
	return ""
}

// Retryable reports whether the same request may succeed later.
func (e *APIError) Retryable() bool {
	return e.StatusCode == 429 || e.StatusCode == 408 || e.StatusCode >= 500
}

// IncompleteError is a listing that stopped early: how far it got and why.
type IncompleteError struct {
	Pages, Incidents int
	// Through is the last update time of the last incident delivered.
	Through time.Time
	Err     error
}

func (e *IncompleteError) Error() string {
	through := "nothing delivered"
	if !e.Through.IsZero() {
		through = "through lastUpdate " + e.Through.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("incident listing stopped after %d pages (%d incidents, %s): %v", e.Pages, e.Incidents, through, e.Err)
}

func (e *IncompleteError) Unwrap() []error { return []error{ErrIncompleteListing, e.Err} }
