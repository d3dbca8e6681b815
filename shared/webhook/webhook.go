// Package webhook verifies signed webhook deliveries before anything reads
// them: the Standard Webhooks scheme (webhook-id, webhook-timestamp,
// webhook-signature: v1,<base64>) and the WebSub X-Hub-Signature that Jira
// Cloud sends (sha256=<hex> over the raw body).
//
// It is written here rather than taken from the Standard Webhooks Go library
// (github.com/standard-webhooks/standard-webhooks/libraries, v0.0.1): that
// library reads the clock itself, keeps one secret per verifier and returns
// unexported errors, while a receiver must tell a malformed request (400)
// from a forged or stale one (401), try several secrets during a rotation,
// and be testable at a fixed time. The tests check this code against the
// library and against the specification's published vector.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The ways a delivery fails verification. Every error this package returns
// wraps exactly one of them.
var (
	// ErrMissing: a signature header is absent (answer 400).
	ErrMissing = errors.New("webhook: signature headers missing")
	// ErrMalformed: a signature header cannot be parsed (answer 400).
	ErrMalformed = errors.New("webhook: signature headers malformed")
	// ErrSignature: no signature matches any configured secret (answer 401).
	ErrSignature = errors.New("webhook: no signature matches")
	// ErrStale: the signed timestamp is outside the tolerance (answer 401).
	ErrStale = errors.New("webhook: timestamp outside the tolerance")
)

// Standard Webhooks header names.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// HeaderHubSignature is the WebSub signature header (Jira Cloud admin webhooks).
const HeaderHubSignature = "X-Hub-Signature"

// maxID bounds webhook-id: it is signed, but it also becomes a state key.
const maxID = 256

// ParseStandardSecrets reads Standard Webhooks secrets, "whsec_<base64>",
// separated by spaces: several at once during a rotation.
func ParseStandardSecrets(s string) ([][]byte, error) {
	var keys [][]byte
	for i, f := range strings.Fields(s) {
		k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(f, "whsec_"))
		if err != nil || len(k) < 16 {
			// The secret itself never goes into the message.
			return nil, fmt.Errorf("secret %d is not a Standard Webhooks secret: use whsec_ followed by the base64 of 16 to 64 random bytes", i+1)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no secret given")
	}
	return keys, nil
}

// ParseSecrets reads plain shared secrets (Jira), separated by spaces.
func ParseSecrets(s string) ([][]byte, error) {
	var keys [][]byte
	for i, f := range strings.Fields(s) {
		if len(f) < 16 {
			return nil, fmt.Errorf("secret %d is shorter than 16 characters: generate a long random one", i+1)
		}
		keys = append(keys, []byte(f))
	}
	if len(keys) == 0 {
		return nil, errors.New("no secret given")
	}
	return keys, nil
}

// SignStandard is the v1 signature of a delivery: senders and tests use it.
func SignStandard(key []byte, id string, ts time.Time, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(standardMAC(key, id, strconv.FormatInt(ts.Unix(), 10), body))
}

func standardMAC(key []byte, id, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Delivery is what a verified Standard Webhooks delivery says of itself.
type Delivery struct {
	ID        string
	Timestamp time.Time
}

// VerifyStandard checks a Standard Webhooks delivery against every key and
// the clock: the timestamp must be within tolerance of now either way.
func VerifyStandard(keys [][]byte, h http.Header, body []byte, now time.Time, tolerance time.Duration) (Delivery, error) {
	id, ts, sig := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	var missing []string
	for _, m := range []struct{ name, v string }{{HeaderID, id}, {HeaderTimestamp, ts}, {HeaderSignature, sig}} {
		if m.v == "" {
			missing = append(missing, m.name)
		}
	}
	if len(missing) > 0 {
		return Delivery{}, fmt.Errorf("%w: %s", ErrMissing, strings.Join(missing, ", "))
	}
	if len(id) > maxID || strings.ContainsFunc(id, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return Delivery{}, fmt.Errorf("%w: %s must be at most %d printable ASCII characters", ErrMalformed, HeaderID, maxID)
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || strconv.FormatInt(secs, 10) != ts {
		return Delivery{}, fmt.Errorf("%w: %s must be integer Unix seconds", ErrMalformed, HeaderTimestamp)
	}
	at := time.Unix(secs, 0)
	if d := now.Sub(at); d > tolerance || d < -tolerance {
		return Delivery{}, fmt.Errorf("%w: signed at %s, %s from this host's clock (tolerance %s)", ErrStale, at.UTC().Format(time.RFC3339), d.Round(time.Second), tolerance)
	}
	var given [][]byte
	for _, f := range strings.Fields(sig) {
		v, b64, ok := strings.Cut(f, ",")
		if !ok || v != "v1" {
			continue // other schemes (v1a: asymmetric) are not configured here
		}
		if s, err := base64.StdEncoding.DecodeString(b64); err == nil && len(s) == sha256.Size {
			given = append(given, s)
		}
	}
	if len(given) == 0 {
		return Delivery{}, fmt.Errorf("%w: %s has no v1,<base64 HMAC-SHA256> entry", ErrMalformed, HeaderSignature)
	}
	for _, k := range keys {
		want := standardMAC(k, id, ts, body)
		for _, s := range given {
			if hmac.Equal(s, want) {
				return Delivery{ID: id, Timestamp: at}, nil
			}
		}
	}
	return Delivery{}, fmt.Errorf("%w: the signature was made with another secret, or the body was changed", ErrSignature)
}

// SignHub is the X-Hub-Signature value of a body.
func SignHub(key, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifyHub checks an X-Hub-Signature header (sha256=<hex> of the raw body).
// The scheme has no timestamp: the caller checks the age the payload states.
func VerifyHub(keys [][]byte, header string, body []byte) error {
	if header == "" {
		return fmt.Errorf("%w: %s (register the webhook with a secret)", ErrMissing, HeaderHubSignature)
	}
	alg, hx, ok := strings.Cut(header, "=")
	if !ok || !strings.EqualFold(alg, "sha256") {
		return fmt.Errorf("%w: %s must be sha256=<hex>", ErrMalformed, HeaderHubSignature)
	}
	given, err := hex.DecodeString(hx)
	if err != nil || len(given) != sha256.Size {
		return fmt.Errorf("%w: %s must be sha256= and 64 hex digits", ErrMalformed, HeaderHubSignature)
	}
	for _, k := range keys {
		m := hmac.New(sha256.New, k)
		m.Write(body)
		if hmac.Equal(given, m.Sum(nil)) {
			return nil
		}
	}
	return fmt.Errorf("%w: the signature was made with another secret, or the body was changed", ErrSignature)
}
