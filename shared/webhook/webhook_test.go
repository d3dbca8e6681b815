package webhook_test

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	reference "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/defender-functions/defender-functions/shared/webhook"
)

// The specification's published vector (standard-webhooks libraries' tests).
const (
	specSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTS     = 1614265330
	specBody   = `{"test": 2432232314}`
	specSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	// A signature of the same length made with another key.
	otherSig = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
)

func keys(t testing.TB, s string) [][]byte {
	k, err := webhook.ParseStandardSecrets(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func headers(id, ts, sig string) http.Header {
	h := http.Header{}
	for k, v := range map[string]string{webhook.HeaderID: id, webhook.HeaderTimestamp: ts, webhook.HeaderSignature: sig} {
		if v != "" {
			h.Set(k, v)
		}
	}
	return h
}

func TestSpecVector(t *testing.T) {
	k := keys(t, specSecret)
	if got := webhook.SignStandard(k[0], specID, time.Unix(specTS, 0), []byte(specBody)); got != specSig {
		t.Fatalf("SignStandard = %s, want the specification's %s", got, specSig)
	}
	// The secret without its prefix is the same key.
	if got := webhook.SignStandard(keys(t, specSecret[len("whsec_"):])[0], specID, time.Unix(specTS, 0), []byte(specBody)); got != specSig {
		t.Fatalf("unprefixed secret signs %s", got)
	}
}

func TestVerifyStandard(t *testing.T) {
	at := time.Unix(specTS, 0)
	ts := strconv.Itoa(specTS)
	other := "whsec_" + "c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=" // "second-secret-for-rotation"
	cases := []struct {
		name    string
		secrets string
		h       http.Header
		body    string
		now     time.Time
		want    error
	}{
		{"spec vector", specSecret, headers(specID, ts, specSig), specBody, at, nil},
		{"4m59s late", specSecret, headers(specID, ts, specSig), specBody, at.Add(5*time.Minute - time.Second), nil},
		{"exactly 5m late", specSecret, headers(specID, ts, specSig), specBody, at.Add(5 * time.Minute), nil},
		{"5m01s late", specSecret, headers(specID, ts, specSig), specBody, at.Add(5*time.Minute + time.Second), webhook.ErrStale},
		{"5m01s early", specSecret, headers(specID, ts, specSig), specBody, at.Add(-5*time.Minute - time.Second), webhook.ErrStale},
		{"several signatures, one valid", specSecret, headers(specID, ts, otherSig+" v2,"+specSig[3:]+" "+specSig), specBody, at, nil},
		{"rotation: old secret still listed", other + " " + specSecret, headers(specID, ts, specSig), specBody, at, nil},
		{"rotation: only the new secret", other, headers(specID, ts, specSig), specBody, at, webhook.ErrSignature},
		{"forged signature", specSecret, headers(specID, ts, otherSig), specBody, at, webhook.ErrSignature},
		{"body changed", specSecret, headers(specID, ts, specSig), `{"test": 2432232315}`, at, webhook.ErrSignature},
		{"id changed", specSecret, headers("msg_other", ts, specSig), specBody, at, webhook.ErrSignature},
		{"timestamp changed", specSecret, headers(specID, strconv.Itoa(specTS+1), specSig), specBody, at, webhook.ErrSignature},
		{"v2 only", specSecret, headers(specID, ts, "v2,"+specSig[3:]), specBody, at, webhook.ErrMalformed},
		{"signature not base64", specSecret, headers(specID, ts, "v1,!!!"), specBody, at, webhook.ErrMalformed},
		{"signature truncated", specSecret, headers(specID, ts, specSig[:20]), specBody, at, webhook.ErrMalformed},
		{"no id", specSecret, headers("", ts, specSig), specBody, at, webhook.ErrMissing},
		{"no timestamp", specSecret, headers(specID, "", specSig), specBody, at, webhook.ErrMissing},
		{"no signature", specSecret, headers(specID, ts, ""), specBody, at, webhook.ErrMissing},
		{"timestamp in ms", specSecret, headers(specID, ts+"000", specSig), specBody, at, webhook.ErrStale},
		{"timestamp with leading zero", specSecret, headers(specID, "0"+ts, specSig), specBody, at, webhook.ErrMalformed},
		{"timestamp not a number", specSecret, headers(specID, "yesterday", specSig), specBody, at, webhook.ErrMalformed},
		{"id with a space", specSecret, headers("msg 1", ts, specSig), specBody, at, webhook.ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := webhook.VerifyStandard(keys(t, c.secrets), c.h, []byte(c.body), c.now, 5*time.Minute)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if err == nil && (d.ID != c.h.Get(webhook.HeaderID) || !d.Timestamp.Equal(at)) {
				t.Fatalf("delivery = %+v", d)
			}
		})
	}
}

// The reference library and this package agree on fresh deliveries: what
// one signs the other accepts, and both refuse the same tampering.
func TestAgreesWithReferenceLibrary(t *testing.T) {
	ref, err := reference.NewWebhook(specSecret)
	if err != nil {
		t.Fatal(err)
	}
	k := keys(t, specSecret)
	now := time.Now()
	for i, body := range []string{"", "{}", specBody, `{"type":"ticket.updated","data":{"incidentId":"1001"}}`, "\x00\xff binary"} {
		id := "msg_" + strconv.Itoa(i)
		sig, _ := ref.Sign(id, now, []byte(body))
		if ours := webhook.SignStandard(k[0], id, now, []byte(body)); ours != sig {
			t.Fatalf("body %q: reference signs %s, we sign %s", body, sig, ours)
		}
		h := headers(id, strconv.FormatInt(now.Unix(), 10), sig)
		if _, err := webhook.VerifyStandard(k, h, []byte(body), now, 5*time.Minute); err != nil {
			t.Fatalf("body %q: we refuse the reference's signature: %v", body, err)
		}
		tampered := []byte(body + " ")
		if ref.Verify(tampered, h) == nil {
			t.Fatal("reference accepts a tampered body")
		}
		if _, err := webhook.VerifyStandard(k, h, tampered, now, 5*time.Minute); !errors.Is(err, webhook.ErrSignature) {
			t.Fatalf("tampered body: %v", err)
		}
	}
}

func TestVerifyHub(t *testing.T) {
	secret := []byte("jira-admin-webhook-secret-0123456789")
	body := []byte(`{"timestamp":1764165600000,"webhookEvent":"jira:issue_updated"}`)
	good := webhook.SignHub(secret, body)
	cases := []struct {
		name   string
		header string
		body   []byte
		keys   [][]byte
		want   error
	}{
		{"valid", good, body, [][]byte{secret}, nil},
		{"valid, upper-case hex and algorithm", "SHA256=" + strings.ToUpper(good[len("sha256="):]), body, [][]byte{secret}, nil},
		{"rotation", good, body, [][]byte{[]byte("the-new-secret-0123456789"), secret}, nil},
		{"wrong secret", good, body, [][]byte{[]byte("the-new-secret-0123456789")}, webhook.ErrSignature},
		{"body changed", good, append([]byte(nil), append(body, ' ')...), [][]byte{secret}, webhook.ErrSignature},
		{"missing", "", body, [][]byte{secret}, webhook.ErrMissing},
		{"sha1", "sha1=" + good[7:47], body, [][]byte{secret}, webhook.ErrMalformed},
		{"no algorithm", good[7:], body, [][]byte{secret}, webhook.ErrMalformed},
		{"short", good[:40], body, [][]byte{secret}, webhook.ErrMalformed},
		{"not hex", "sha256=" + string(make([]byte, 64)), body, [][]byte{secret}, webhook.ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := webhook.VerifyHub(c.keys, c.header, c.body)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
}

func TestParseSecrets(t *testing.T) {
	if k, err := webhook.ParseStandardSecrets(specSecret + "  whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24="); err != nil || len(k) != 2 {
		t.Fatalf("two secrets: %d, %v", len(k), err)
	}
	for _, bad := range []string{"", "  ", "whsec_not*base64", "whsec_c2hvcnQ="} {
		_, err := webhook.ParseStandardSecrets(bad)
		if err == nil {
			t.Fatalf("%q accepted", bad)
		}
		if bad != "" && len(bad) > 8 && strings.Contains(err.Error(), bad[6:]) {
			t.Fatalf("the error repeats the secret: %v", err)
		}
	}
	if _, err := webhook.ParseSecrets("short"); err == nil {
		t.Fatal("a short plain secret is accepted")
	}
	if k, err := webhook.ParseSecrets("0123456789abcdef fedcba9876543210"); err != nil || len(k) != 2 {
		t.Fatalf("plain secrets: %d, %v", len(k), err)
	}
}
