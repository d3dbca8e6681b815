package defender

import "strings"

// Enumerations in Graph's spelling, the canonical form of Incident.
var (
	Statuses        = []string{"active", "inProgress", "resolved", "redirected", "awaitingAction", "unknownFutureValue"}
	Severities      = []string{"unknown", "informational", "low", "medium", "high", "unknownFutureValue"}
	Classifications = []string{"unknown", "falsePositive", "truePositive", "informationalExpectedActivity", "unknownFutureValue"}
	Determinations  = []string{"unknown", "apt", "malware", "securityPersonnel", "securityTesting", "unwantedSoftware", "other",
		"multiStagedAttack", "compromisedUser", "phishing", "maliciousUserActivity", "clean", "insufficientData",
		"confirmedUserActivity", "lineOfBusinessApplication", "unknownFutureValue"}
)

// Spellings Microsoft's docs use for the same values.
var aliases = map[string]string{
	"notavailable": "unknown", "unspecified": "unknown", "compromisedaccount": "compromisedUser",
	"confirmedactivity": "confirmedUserActivity", "notmalicious": "clean",
	"noenoughdatatovalidate": "insufficientData", "notenoughdatatovalidate": "insufficientData",
	"informational, expected activity": "informationalExpectedActivity",
}

// Normalize maps either API's spelling of an enum value to Graph's. An
// unknown value is kept as it is: the API may have added it.
func Normalize(v string, set []string) string {
	if v == "" {
		return ""
	}
	l := strings.ToLower(v)
	if a, ok := aliases[l]; ok {
		return a
	}
	for _, s := range set {
		if strings.ToLower(s) == l {
			return s
		}
	}
	return v
}

// Known reports whether v (either spelling) is a known member of set.
func Known(v string, set []string) bool {
	n := Normalize(v, set)
	for _, s := range set {
		if s == n {
			return true
		}
	}
	return false
}

// xdrSpelling is the XDR API's PascalCase for a Graph value.
func xdrSpelling(graph string, determination bool) string {
	if graph == "" {
		return ""
	}
	if determination && graph == "unknown" {
		return "NotAvailable"
	}
	return strings.ToUpper(graph[:1]) + graph[1:]
}
