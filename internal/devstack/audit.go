package devstack

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// The suite-wide secrets audit (make test): with DEVSTACK_AUDIT_DIR set,
// every devstack writes what it issued there when it closes, and tests tee
// the log output of the code under test there (AuditLog). The audit command
// (infra/local/cmd/audit) then searches every log for every issued value.
const EnvAuditDir = "DEVSTACK_AUDIT_DIR"

var auditMu sync.Mutex

func appendAudit(kind string, data []byte) {
	dir := os.Getenv(EnvAuditDir)
	if dir == "" || len(data) == 0 {
		return
	}
	auditMu.Lock()
	defer auditMu.Unlock()
	f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("%s-%d.txt", kind, os.Getpid())), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	f.Write(data)
	f.Close()
}

// recordIssued writes the stack's issued values for the audit.
func (s *Stack) recordIssued() {
	if os.Getenv(EnvAuditDir) == "" {
		return
	}
	appendAudit("issued", []byte(strings.Join(s.Issued(), "\n")+"\n"))
}

// AuditLog is a writer that keeps a copy of log output for the audit; it
// discards when no audit runs. Tests tee the logs of the code under test
// into it: io.MultiWriter(buf, devstack.AuditLog()).
func AuditLog() io.Writer {
	if os.Getenv(EnvAuditDir) == "" {
		return io.Discard
	}
	return auditWriter{}
}

type auditWriter struct{}

func (auditWriter) Write(p []byte) (int, error) {
	appendAudit("logs", p)
	return len(p), nil
}
