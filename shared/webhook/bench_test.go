package webhook_test

import (
	"bytes"
	"strconv"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/shared/webhook"
)

// What verification adds to a delivery of a typical Jira size (9 KB).
func BenchmarkVerify(b *testing.B) {
	body := bytes.Repeat([]byte(`{"k":"v"},`), 900)
	k := keys(b, specSecret)
	now := time.Unix(specTS, 0)
	h := headers(specID, strconv.Itoa(specTS), webhook.SignStandard(k[0], specID, now, body))
	hub := webhook.SignHub(k[0], body)
	b.Run("standard", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, err := webhook.VerifyStandard(k, h, body, now, 5*time.Minute); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("hub", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if err := webhook.VerifyHub(k, hub, body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
