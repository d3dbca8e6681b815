package devstack

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/google/uuid"
)

// AWS Secrets Manager, as the Lambda build reads its webhook secrets: the
// JSON 1.1 protocol's GetSecretValue, behind Signature Version 4 checked
// with the SDK's own signer, with the service's error codes and messages
// (API reference: GetSecretValue, Common Errors). One execution role's
// credentials are issued; it may read the secrets put with PutAWSSecret
// unless DenyAWSSecret takes that away.

// The simulated account and region.
const (
	AWSRegion    = "eu-west-1"
	AWSAccountID = "123456789012"
	awsRoleARN   = "arn:aws:sts::" + AWSAccountID + ":assumed-role/defender-functions-role/defender-functions"
)

type awsSecret struct {
	name, arn string
	denied    bool
	versions  []awsSecretVersion // oldest first; the last is AWSCURRENT
	created   time.Time
}

type awsSecretVersion struct {
	id, value string
}

type secretsManager struct {
	mu      sync.Mutex
	secrets map[string]*awsSecret // by name
	creds   aws.Credentials
}

func newSecretsManager() *secretsManager {
	return &secretsManager{secrets: map[string]*awsSecret{}, creds: aws.Credentials{
		AccessKeyID: "ASIA" + strings.ToUpper(randomHex(8)), SecretAccessKey: randomHex(20), SessionToken: randomHex(48)}}
}

// PutAWSSecret stores a new version of a Secrets Manager secret (creating
// it), makes it AWSCURRENT, and returns the secret's ARN. The execution
// role may read it.
func (s *Stack) PutAWSSecret(name, value string) string {
	sm := s.secretsManager
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sec := sm.secrets[name]
	if sec == nil {
		// A real ARN ends in a hyphen and six random characters.
		sec = &awsSecret{name: name, created: time.Now(),
			arn: fmt.Sprintf("arn:aws:secretsmanager:%s:%s:secret:%s-%s", AWSRegion, AWSAccountID, name, randomHex(3))}
		sm.secrets[name] = sec
	}
	sec.versions = append(sec.versions, awsSecretVersion{id: uuid.NewString(), value: value})
	s.remember(value)
	return sec.arn
}

// DenyAWSSecret takes away (or gives back) the execution role's right to
// read a secret, as an IAM policy without it would.
func (s *Stack) DenyAWSSecret(name string, deny bool) {
	sm := s.secretsManager
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if sec := sm.secrets[name]; sec != nil {
		sec.denied = deny
	}
}

// AWSSettings are the variables Lambda gives a function (its execution
// role's credentials and region) and the SDK's endpoint overrides that
// point Secrets Manager, STS and SQS here.
func (s *Stack) AWSSettings() map[string]string {
	c := s.secretsManager.creds
	return map[string]string{
		"AWS_ACCESS_KEY_ID":                c.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY":            c.SecretAccessKey,
		"AWS_SESSION_TOKEN":                c.SessionToken,
		"AWS_REGION":                       AWSRegion,
		"AWS_ENDPOINT_URL_SECRETS_MANAGER": s.SecretsManagerURL,
		"AWS_ENDPOINT_URL_STS":             s.STSURL,
		"AWS_ENDPOINT_URL_SQS":             s.SQSURL,
	}
}

func (s *Stack) secretsManagerHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := s.serveSecretsManager(w, r)
		s.counters.add("secretsmanager."+strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "secretsmanager."), status)
	})
}

func (s *Stack) serveSecretsManager(w http.ResponseWriter, r *http.Request) int {
	sm := s.secretsManager
	fail := func(status int, code, msg string) int {
		w.Header().Set("X-Amzn-Requestid", uuid.NewString())
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"__type": code, "Message": msg})
		return status
	}
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		return fail(404, "UnknownOperationException", "")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10+1))
	if err != nil || len(body) > 64<<10 {
		return fail(413, "RequestEntityTooLarge", "Request is too large")
	}
	if code, msg := s.checkSigV4(r, body, "secretsmanager"); code != "" {
		return fail(400, code, msg)
	}
	if r.Header.Get("X-Amz-Target") != "secretsmanager.GetSecretValue" {
		return fail(400, "UnknownOperationException", "")
	}
	if s.faults().SecretsManagerOutage {
		return fail(500, "InternalServiceError", "An error occurred on the server side.")
	}
	var in struct {
		SecretID     string `json:"SecretId"`
		VersionID    string `json:"VersionId"`
		VersionStage string `json:"VersionStage"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return fail(400, "SerializationException", "")
	}
	if in.SecretID == "" || len(in.SecretID) > 2048 {
		return fail(400, "InvalidParameterException", "Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: -/_+=.@!")
	}
	sm.mu.Lock()
	sec := sm.find(in.SecretID)
	var out map[string]any
	if sec != nil && !sec.denied {
		for i := len(sec.versions) - 1; i >= 0; i-- {
			v := sec.versions[i]
			stage := ""
			switch i {
			case len(sec.versions) - 1:
				stage = "AWSCURRENT"
			case len(sec.versions) - 2:
				stage = "AWSPREVIOUS"
			}
			if in.VersionID != "" && in.VersionID != v.id || in.VersionID == "" && cmp.Or(in.VersionStage, "AWSCURRENT") != stage {
				continue
			}
			out = map[string]any{"ARN": sec.arn, "Name": sec.name, "SecretString": v.value, "VersionId": v.id,
				"VersionStages": []string{stage}, "CreatedDate": float64(sec.created.UnixMilli()) / 1000}
			break
		}
	}
	sm.mu.Unlock()
	switch {
	case sec != nil && sec.denied:
		return fail(400, "AccessDeniedException", fmt.Sprintf("User: %s is not authorized to perform: secretsmanager:GetSecretValue on resource: %s because no identity-based policy allows the secretsmanager:GetSecretValue action", awsRoleARN, in.SecretID))
	case sec == nil:
		return fail(400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
	case out == nil:
		return fail(400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret value for staging label: "+cmp.Or(in.VersionStage, "AWSCURRENT"))
	}
	b, _ := json.Marshal(out)
	w.Header().Set("X-Amzn-Requestid", uuid.NewString())
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(200)
	w.Write(b)
	return 200
}

// find resolves a SecretId as the service does: the name, the full ARN, or
// the ARN without its random suffix. The caller holds mu.
func (sm *secretsManager) find(id string) *awsSecret {
	if sec := sm.secrets[id]; sec != nil {
		return sec
	}
	for _, sec := range sm.secrets {
		if id == sec.arn || id == sec.arn[:len(sec.arn)-7] {
			return sec
		}
	}
	return nil
}

// checkSigV4 verifies the request's Signature Version 4 as AWS services
// do: known credentials, this region and service, a timestamp within
// five minutes, and the signature recomputed by the SDK's signer over the
// headers the request says it signed.
func (s *Stack) checkSigV4(r *http.Request, body []byte, service string) (code, msg string) {
	creds := s.secretsManager.creds
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 ") {
		return "MissingAuthenticationTokenException", "Missing Authentication Token"
	}
	fields := map[string]string{}
	for _, f := range strings.Split(strings.TrimPrefix(auth, "AWS4-HMAC-SHA256 "), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
		fields[k] = v
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 || fields["SignedHeaders"] == "" || fields["Signature"] == "" {
		return "IncompleteSignatureException", "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters."
	}
	if scope[0] != creds.AccessKeyID || r.Header.Get("X-Amz-Security-Token") != creds.SessionToken {
		return "UnrecognizedClientException", "The security token included in the request is invalid."
	}
	if scope[2] != AWSRegion || scope[3] != service || scope[4] != "aws4_request" {
		return "InvalidSignatureException", fmt.Sprintf("Credential should be scoped to a valid region, not '%s'. ", scope[2])
	}
	at, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return "IncompleteSignatureException", "Date must be in ISO-8601 'basic format'. Got ''. See http://en.wikipedia.org/wiki/ISO_8601"
	}
	// AWS's clock, not Options.Now (Entra ID's): a skew test moves one.
	if now := time.Now(); at.Before(now.Add(-5*time.Minute)) || at.After(now.Add(5*time.Minute)) {
		return "InvalidSignatureException", fmt.Sprintf("Signature expired: %s is now earlier than %s (%s - 5 min.)",
			at.Format("20060102T150405Z"), now.Add(-5*time.Minute).UTC().Format("20060102T150405Z"), now.UTC().Format("20060102T150405Z"))
	}
	// Re-sign a copy holding only the headers the client signed.
	cp, _ := http.NewRequestWithContext(context.Background(), r.Method, "https://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	cp.Host = r.Host
	cp.ContentLength = int64(len(body))
	for _, h := range strings.Split(fields["SignedHeaders"], ";") {
		if h != "host" && h != "content-length" {
			cp.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, cp, hex.EncodeToString(sum[:]), service, AWSRegion, at); err != nil {
		return "InvalidSignatureException", err.Error()
	}
	if !strings.HasSuffix(cp.Header.Get("Authorization"), "Signature="+fields["Signature"]) {
		return "InvalidSignatureException", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
	}
	return "", ""
}
