package ticketwebhook_test

import (
	"testing"

	ticketwebhook "github.com/defender-functions/defender-functions/functions/ticket-webhook"
)

func BenchmarkParseJira(b *testing.B) {
	m := builtin(b)
	body := fixture(b, "jira-issue-updated-done.json")
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, _, err := ticketwebhook.ParseJira(body, m); err != nil {
			b.Fatal(err)
		}
	}
}
