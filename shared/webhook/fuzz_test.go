package webhook_test

import (
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/shared/webhook"
)

// Any header values and body: no panic, exactly one known failure or a
// success, and a success only for the signature of that very body.
func FuzzVerifyStandard(f *testing.F) {
	f.Add(specID, strconv.Itoa(specTS), specSig, []byte(specBody))
	f.Add(specID, strconv.Itoa(specTS), otherSig+" "+specSig, []byte(specBody))
	f.Add("", "", "", []byte(nil))
	f.Add("msg_1", "-1", "v1,", []byte("{}"))
	f.Add("msg_1", "1614265330", "v1,,v1 v1,=", []byte("{}"))
	k := keys(f, specSecret)
	now := time.Unix(specTS, 0)
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		h := http.Header{}
		h.Set(webhook.HeaderID, id)
		h.Set(webhook.HeaderTimestamp, ts)
		h.Set(webhook.HeaderSignature, sig)
		d, err := webhook.VerifyStandard(k, h, body, now, 5*time.Minute)
		if err != nil {
			n := 0
			for _, e := range []error{webhook.ErrMissing, webhook.ErrMalformed, webhook.ErrSignature, webhook.ErrStale} {
				if errors.Is(err, e) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("error %v wraps %d kinds", err, n)
			}
			return
		}
		if d.ID != h.Get(webhook.HeaderID) {
			t.Fatalf("id %q, header %q", d.ID, h.Get(webhook.HeaderID))
		}
		if _, err := webhook.VerifyStandard(k, h, append(append([]byte(nil), body...), '!'), now, 5*time.Minute); err == nil {
			t.Fatal("a changed body verifies too")
		}
	})
}

func FuzzVerifyHub(f *testing.F) {
	secret := []byte("jira-admin-webhook-secret-0123456789")
	body := []byte(`{"timestamp":1764165600000}`)
	f.Add(webhook.SignHub(secret, body), body)
	f.Add("sha256=", []byte(nil))
	f.Add("sha1=00", []byte("x"))
	f.Add("=", []byte("{}"))
	f.Fuzz(func(t *testing.T, header string, b []byte) {
		err := webhook.VerifyHub([][]byte{secret}, header, b)
		if err == nil {
			if header == "" || webhook.VerifyHub([][]byte{secret}, header, append(append([]byte(nil), b...), '!')) == nil {
				t.Fatal("verifies without, or despite, the body")
			}
			return
		}
		if !errors.Is(err, webhook.ErrMissing) && !errors.Is(err, webhook.ErrMalformed) && !errors.Is(err, webhook.ErrSignature) {
			t.Fatalf("unclassified error %v", err)
		}
	})
}
