package devstack_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/defender-functions/defender-functions/internal/devstack"
)

type graphHunt struct {
	Schema []struct {
		Name string `json:"name"`
		Type string `json:"type"`
	} `json:"schema"`
	Results []map[string]any `json:"results"`
}

func TestHunting(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{})
	graph := token(t, s, devstack.DefaultTenantID, devstack.DefaultClientID, devstack.GraphResource)
	run := func(q, span string) (int, graphHunt, string) {
		body, _ := json.Marshal(map[string]string{"Query": q, "Timespan": span})
		r := do(t, s, "POST", s.GraphURL+"/v1.0/security/runHuntingQuery", graph, strings.NewReader(string(body)))
		var h graphHunt
		if r.status == 200 {
			if err := json.Unmarshal(r.body, &h); err != nil {
				t.Fatal(err)
			}
			return 200, h, ""
		}
		return r.status, h, errorMessage(t, r)
	}
	count := func(q string) int {
		st, h, msg := run(q+" | count", "")
		if st != 200 {
			t.Fatalf("%s: %d %s", q, st, msg)
		}
		return int(h.Results[0]["Count"].(float64))
	}
	all := count("DeviceProcessEvents")
	if all != 3000 {
		t.Fatalf("30 days of DeviceProcessEvents = %d, want 3000", all)
	}
	ps := count(`DeviceProcessEvents | where FileName =~ "POWERSHELL.EXE"`)
	notPs := count(`DeviceProcessEvents | where FileName !~ "powershell.exe"`)
	if ps == 0 || ps+notPs != all {
		t.Fatalf("=~ %d + !~ %d != %d", ps, notPs, all)
	}
	week := count("DeviceProcessEvents | where Timestamp > ago(7d)")
	if week == 0 || week >= all {
		t.Fatalf("ago(7d) kept %d of %d", week, all)
	}
	if n := count(`DeviceProcessEvents | where Timestamp > ago(7d) and FileName in ("cmd.exe", "powershell.exe") or FileName == "never.exe"`); n == 0 || n > week {
		t.Fatalf("and/or/in: %d", n)
	}
	if n := count(`DeviceProcessEvents | where ProcessCommandLine has "whoami"`); n == 0 {
		t.Fatal("has found nothing")
	}
	if n := count(`DeviceProcessEvents | where ProcessCommandLine has "whoam"`); n != 0 {
		t.Fatalf("has matched a partial term %d times", n)
	}
	if a, b := count(`DeviceNetworkEvents | where RemoteUrl contains "example"`), count(`DeviceNetworkEvents | where RemoteUrl startswith "c2."`); a == 0 || b == 0 || b > a {
		t.Fatalf("contains %d startswith %d", a, b)
	}
	// The timespan narrows the data set.
	if st, h, _ := run("DeviceProcessEvents | count", "P1D"); st != 200 || int(h.Results[0]["Count"].(float64)) >= week {
		t.Fatalf("Timespan P1D: %d", st)
	}

	// The docs' own sample query: project, order by, limit.
	st, h, msg := run(`DeviceProcessEvents | where InitiatingProcessFileName =~ "powershell.exe" | project Timestamp, FileName, InitiatingProcessFileName | order by Timestamp desc | limit 2`, "")
	if st != 200 || len(h.Results) != 2 || len(h.Schema) != 3 || h.Schema[0].Name != "Timestamp" || h.Schema[0].Type != "DateTime" || h.Schema[1].Type != "String" {
		t.Fatalf("sample query: %d %s %+v", st, msg, h.Schema)
	}
	if h.Results[0]["Timestamp"].(string) < h.Results[1]["Timestamp"].(string) {
		t.Fatal("order by desc is not descending")
	}
	// summarize, top, extend, distinct.
	st, h, msg = run(`DeviceLogonEvents | summarize Failures=countif_placeholder() by AccountName`, "")
	if st != 400 || !strings.Contains(msg, "unsupported aggregation") {
		t.Fatalf("unsupported aggregation: %d %s", st, msg)
	}
	st, h, msg = run(`DeviceLogonEvents | where ActionType == "LogonFailed" | summarize Failures=count(), Devices=dcount(DeviceName), First=min(Timestamp) by AccountName | top 3 by Failures desc`, "")
	if st != 200 || len(h.Results) != 3 || h.Schema[1].Name != "Failures" || h.Schema[1].Type != "Int64" || h.Schema[3].Type != "DateTime" {
		t.Fatalf("summarize: %d %s %+v", st, msg, h.Schema)
	}
	if h.Results[0]["Failures"].(float64) < h.Results[2]["Failures"].(float64) {
		t.Fatal("top by desc is not descending")
	}
	st, h, _ = run(`EmailEvents | extend Sender = tolower(SenderFromAddress), Big = AttachmentCount * 2 | project Sender, Big | take 5`, "")
	if st != 200 || len(h.Results) != 5 || h.Schema[0].Name != "Sender" || h.Schema[1].Type != "Int64" {
		t.Fatalf("extend: %d %+v", st, h.Schema)
	}
	st, h, _ = run(`EmailEvents | distinct DeliveryAction | sort by DeliveryAction asc`, "")
	if st != 200 || len(h.Results) < 2 || len(h.Results) > 3 {
		t.Fatalf("distinct: %d %v", st, h.Results)
	}
	for _, tbl := range []string{"DeviceFileEvents", "AlertInfo", "AlertEvidence", "IdentityLogonEvents"} {
		if count(tbl) == 0 {
			t.Errorf("%s is empty", tbl)
		}
	}

	// Errors are 400 with the service's text.
	for _, tc := range []struct{ q, want string }{
		{"EmailAttachmentInfo | take 1", "Failed to resolve table or column expression named 'EmailAttachmentInfo'"},
		{"DeviceProcessEvents | where NoSuchColumn == 1", "Failed to resolve scalar expression named 'NoSuchColumn'"},
		{"DeviceProcessEvents | join (AlertInfo) on DeviceId", "is not supported"},
		{`DeviceProcessEvents | where FileName == "unterminated`, "Syntax error"},
		{"", "Parameter Query is missing."},
	} {
		if st, _, msg := run(tc.q, ""); st != 400 || !strings.Contains(msg, tc.want) {
			t.Errorf("%q: %d %q, want 400 containing %q", tc.q, st, msg, tc.want)
		}
	}
	if st, _, msg := run("AlertInfo | take 1", "P3X"); st != 400 || !strings.Contains(msg, "Timespan") {
		t.Errorf("bad timespan: %d %s", st, msg)
	}
}

func TestHuntingXDRShape(t *testing.T) {
	t.Parallel()
	s := start(t, devstack.Options{})
	xdr := token(t, s, devstack.DefaultTenantID, devstack.DefaultClientID, devstack.XDRResource)
	r := do(t, s, "POST", s.XDRURL+"/api/advancedhunting/run", xdr, strings.NewReader(`{"Query":"AlertInfo | project Timestamp, Title | take 3"}`))
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	var x struct {
		Stats   map[string]any
		Schema  []struct{ Name, Type string }
		Results []map[string]any
	}
	if err := json.Unmarshal(r.body, &x); err != nil {
		t.Fatal(err)
	}
	if x.Stats["ExecutionTime"] == nil || len(x.Schema) != 2 || x.Schema[1].Name != "Title" || len(x.Results) != 3 {
		t.Fatalf("%+v", x)
	}
	// Body parameters are case-sensitive on the XDR API.
	if r := do(t, s, "POST", s.XDRURL+"/api/advancedhunting/run", xdr, strings.NewReader(`{"query":"AlertInfo | take 1"}`)); r.status != 400 || errorCode(t, r) != "MissingRequiredParameter" {
		t.Fatalf("lower-case key: %d %s", r.status, r.body)
	}
}
