package defender

import (
	"testing"
	"time"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 26, 13, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		header string
		want   time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{" 0 ", 0},
		{"Thu, 26 Nov 2026 13:00:30 GMT", 30 * time.Second},
		{"Thu, 26 Nov 2026 12:59:00 GMT", 0}, // in the past
		{"soon", 0},
		{"-5", 0},
	} {
		if got := retryAfter(tc.header, now); got != tc.want {
			t.Errorf("Retry-After %q = %s, want %s", tc.header, got, tc.want)
		}
	}
	if got := retryAfterFromMessage("API calls quota exceeded! maximum allowed 50 per 00:01:00"); got != time.Minute {
		t.Errorf("from message: %s", got)
	}
	if got := requiredRoles("Missing application roles. API required roles: SecurityIncident.Read.All,SecurityIncident.ReadWrite.All, application roles: ."); len(got) != 2 || got[1] != "SecurityIncident.ReadWrite.All" {
		t.Errorf("roles %v", got)
	}
}
