package ticketwebhook_test

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/defender-functions/defender-functions/internal/devstack"
	"github.com/defender-functions/defender-functions/shared/config"
)

// secretsManager, as WEBHOOK_SECRETS_ARN given to newRig, puts the rig's
// keys in a Secrets Manager secret of the devstack and names its ARN.
const secretsManager = "devstack-secrets-manager"

const awsSecretName = "defender/webhooks"

// useSecretsManager moves the rig's keys from the settings into a secret,
// and points the SDK's default chain at the devstack as Lambda's variables
// point it at the execution role.
func (r *rig) useSecretsManager(t *testing.T, m map[string]string) string {
	t.Helper()
	for _, p := range []string{"JIRA", "SERVICENOW", "GENERIC"} {
		delete(m, config.EnvWebhookSecretPrefix+p)
	}
	r.s.UseAWS(t)
	return r.s.PutAWSSecret(awsSecretName, r.secretJSON(map[string]string{}))
}

// secretJSON is the rig's keys as the secret holds them, with edits
// (a key set to "" is left out).
func (r *rig) secretJSON(edit map[string]string) string {
	m := map[string]string{"jira": string(r.jira), "servicenow": "whsec_" + base64.StdEncoding.EncodeToString(r.sn),
		"generic": "whsec_" + base64.StdEncoding.EncodeToString(r.gen)}
	for k, v := range edit {
		if m[k] = v; v == "" {
			delete(m, k)
		}
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func (r *rig) secretReads() int64 {
	return r.s.Counters().Get("secretsmanager.GetSecretValue", 0)
}

// On Lambda the webhook's keys are read at run time from AWS Secrets
// Manager: cached, a rotation taken up without a restart (at once when a
// delivery is signed with a key added since), and every failure to read
// them answered before any signature is checked, naming nothing.
func TestKeysFromSecretsManager(t *testing.T) {
	r := newRig(t, "graph", config.EnvWebhookSecretsARN, secretsManager)
	r.reset(t, "1001")
	body := fixture(t, "generic-resolved.json")
	now := time.Now()

	if a := r.send(t, standardDelivery("generic", r.gen, "msg_sm1", now, body)); a.status != 200 || a.Status != "applied" {
		t.Fatalf("first delivery: %d %+v", a.status, a)
	}
	if a := r.send(t, r.jiraDelivery(t, "jira-comment-created.json", "sm-j1", now)); a.status != 200 {
		t.Fatalf("jira: %d %+v", a.status, a)
	}
	if n := r.secretReads(); n != 1 {
		t.Fatalf("two deliveries read the secret %d times; want 1 (cached)", n)
	}

	// Rotation: the secret now holds a new generic key beside the old one.
	// A delivery signed with the new key is verified at once.
	newKey := randomKey(t)
	r.s.PutAWSSecret(awsSecretName, r.secretJSON(map[string]string{"generic": "whsec_" + base64.StdEncoding.EncodeToString(newKey) + " whsec_" + base64.StdEncoding.EncodeToString(r.gen)}))
	r.reset(t, "1001")
	if a := r.send(t, standardDelivery("generic", newKey, "msg_sm2", now, body)); a.status != 200 || a.Status != "applied" {
		t.Fatalf("delivery signed with the rotated key: %d %+v", a.status, a)
	}
	// A bad signature right after reads nothing more: rereads are bounded.
	reads := r.secretReads()
	if a := r.send(t, standardDelivery("generic", randomKey(t), "msg_sm3", now, body)); a.status != 401 || a.code() != "InvalidSignature" {
		t.Fatalf("forged delivery: %d %+v", a.status, a)
	}
	if r.secretReads() != reads {
		t.Fatal("a forged signature made the function read the secret again within the bound")
	}
}

// Each way reading the keys can fail, cold: the answer, its Retry-After,
// no Defender call, and the cause in the log only.
func TestKeysFromSecretsManagerFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(r *rig)
		status int
		code   string
		retry  string
		logged string
	}{
		{"outage", func(r *rig) { r.s.SetFaults(devstack.Faults{SecretsManagerOutage: true}) }, 503, "SecretsUnavailable", "30", "InternalServiceError"},
		{"role may not read it", func(r *rig) { r.s.DenyAWSSecret(awsSecretName, true) }, 500, "SecretsRejected", "", "grant it secretsmanager:GetSecretValue"},
		{"not JSON", func(r *rig) { r.s.PutAWSSecret(awsSecretName, "jira="+string(r.jira)) }, 500, "KeysMisconfigured", "", "not a JSON object of strings"},
		{"unknown provider", func(r *rig) { r.s.PutAWSSecret(awsSecretName, r.secretJSON(map[string]string{"Jira": "x"})) }, 500, "KeysMisconfigured", "", `has a key \"Jira\"`},
		{"short Jira secret", func(r *rig) { r.s.PutAWSSecret(awsSecretName, r.secretJSON(map[string]string{"jira": "short"})) }, 500, "KeysMisconfigured", "", "shorter than 16"},
		{"provider left out", func(r *rig) { r.s.PutAWSSecret(awsSecretName, r.secretJSON(map[string]string{"generic": ""})) }, 404, "ProviderDisabled", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "graph", config.EnvWebhookSecretsARN, secretsManager)
			tc.break_(r)
			calls := r.apiCalls()
			a := r.send(t, standardDelivery("generic", r.gen, "msg_f", time.Now(), fixture(t, "generic-resolved.json")))
			if a.status != tc.status || a.code() != tc.code || a.retry != tc.retry {
				t.Fatalf("%d %s (Retry-After %q) %+v; want %d %s (Retry-After %q)", a.status, a.code(), a.retry, a, tc.status, tc.code, tc.retry)
			}
			if r.apiCalls() != calls {
				t.Fatal("the failed delivery called Defender")
			}
			msg, _ := json.Marshal(a.Error)
			for _, leak := range []string{"arn:", awsSecretName, "WEBHOOK_", string(r.jira)} {
				if strings.Contains(string(msg), leak) {
					t.Fatalf("the answer discloses %q: %s", leak, msg)
				}
			}
			if !strings.Contains(r.logs.String(), tc.logged) || strings.Contains(r.logs.String(), string(r.jira)) {
				t.Fatalf("log lacks %q (or holds the secret):\n%s", tc.logged, r.logs)
			}
		})
	}
}
