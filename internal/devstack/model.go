package devstack

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// incident is one Defender incident version. Versions are immutable: an
// update stores a new *incident, so a page being written never sees a torn
// one, and each version's rendered JSON is cached.
type incident struct {
	ID             int64
	TenantID       string
	RedirectID     int64
	Name           string
	Description    string
	Created        time.Time
	LastUpdate     time.Time
	AssignedTo     string
	Status         string // Graph spelling (camelCase) is canonical
	Severity       string
	Classification string
	Determination  string
	Tags           []string
	SystemTags     []string
	Comments       []comment
	Alerts         []*alert
	LastModifiedBy string

	once [renderForms]sync.Once
	enc  [renderForms][]byte
}

type comment struct {
	Text      string
	CreatedBy string
	Created   time.Time
}

type alert struct {
	ID                 string
	ServiceSource      string // XDR spelling
	DetectionSource    string
	Created, Updated   time.Time
	Resolved           time.Time
	First, Last        time.Time
	Title, Description string
	Category           string
	Status             string // XDR: New, InProgress, Resolved
	Severity           string
	InvestigationID    int64
	InvestigationState string
	ThreatFamily       string
	MitreTechniques    []string
	Devices            []device
	Entities           []entity
	DetectorID         string
}

type device struct {
	ID, DNSName, OSPlatform, Version, RBACGroup, RiskScore string
	OSBuild                                                int
	RBACGroupID                                            int
	FirstSeen                                              time.Time
}

type entity struct {
	Type                                   string
	SHA1, SHA256, FileName, FilePath       string
	ProcessID                              int
	CommandLine                            string
	IP, URL                                string
	Account, Domain, UPN, UserSID, AADUser string
	Sender, Recipient, Subject             string
	DeviceID                               string
}

func (in *incident) clone() *incident {
	c := &incident{ID: in.ID, TenantID: in.TenantID, RedirectID: in.RedirectID, Name: in.Name, Description: in.Description,
		Created: in.Created, LastUpdate: in.LastUpdate, AssignedTo: in.AssignedTo, Status: in.Status, Severity: in.Severity,
		Classification: in.Classification, Determination: in.Determination, LastModifiedBy: in.LastModifiedBy}
	c.Tags = append([]string(nil), in.Tags...)
	c.SystemTags = append([]string(nil), in.SystemTags...)
	c.Comments = append([]comment(nil), in.Comments...)
	c.Alerts = append([]*alert(nil), in.Alerts...)
	return c
}

// Enumerations, in Graph's spelling.
var (
	statuses        = []string{"active", "inProgress", "resolved", "redirected", "awaitingAction"}
	severities      = []string{"informational", "low", "medium", "high", "unknown"}
	classifications = []string{"unknown", "falsePositive", "truePositive", "informationalExpectedActivity"}
	determinations  = []string{"unknown", "apt", "malware", "securityPersonnel", "securityTesting", "unwantedSoftware", "other",
		"multiStagedAttack", "compromisedUser", "phishing", "maliciousUserActivity", "clean", "insufficientData",
		"confirmedUserActivity", "lineOfBusinessApplication"}
	// Other spellings found in Microsoft's docs for the same values.
	enumAliases = map[string]string{
		"notavailable": "unknown", "unspecified": "unknown", "compromisedaccount": "compromisedUser",
		"confirmedactivity": "confirmedUserActivity", "notmalicious": "clean",
		"noenoughdatatovalidate": "insufficientData", "notenoughdatatovalidate": "insufficientData",
	}
)

// parseEnum accepts either API's spelling and returns Graph's, or "" if unknown.
func parseEnum(v string, set []string) string {
	l := strings.ToLower(v)
	if a, ok := enumAliases[l]; ok {
		l = strings.ToLower(a)
	}
	for _, s := range set {
		if strings.ToLower(s) == l {
			return s
		}
	}
	return ""
}

func xdrEnum(graph string) string {
	if graph == "" {
		return ""
	}
	return strings.ToUpper(graph[:1]) + graph[1:]
}

func xdrDetermination(graph string) string {
	if graph == "unknown" {
		return "NotAvailable"
	}
	return xdrEnum(graph)
}

// ts formats a time as the services do: UTC, up to 7 fractional digits.
func ts(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Truncate(100 * time.Nanosecond).Format(time.RFC3339Nano)
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nullTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := ts(t)
	return &s
}

const (
	formXDR = iota
	formGraph
	formGraphExpand
	formGraphPrefer
	formGraphPreferExpand
	renderForms
)

// render returns the incident's JSON in one of the API shapes, cached.
func (in *incident) render(form int) []byte {
	in.once[form].Do(func() {
		var v any
		switch form {
		case formXDR:
			v = in.xdr()
		default:
			prefer := form == formGraphPrefer || form == formGraphPreferExpand
			expand := form == formGraphExpand || form == formGraphPreferExpand
			v = in.graph(prefer, expand)
		}
		b, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		in.enc[form] = b
	})
	return in.enc[form]
}

// --- XDR (api.security.microsoft.com) shapes ---

type xdrIncident struct {
	IncidentID         int64        `json:"incidentId"`
	IncidentURI        string       `json:"incidentUri"`
	RedirectIncidentID *int64       `json:"redirectIncidentId"`
	IncidentName       string       `json:"incidentName"`
	CreatedTime        string       `json:"createdTime"`
	LastUpdateTime     string       `json:"lastUpdateTime"`
	AssignedTo         *string      `json:"assignedTo"`
	Classification     string       `json:"classification"`
	Determination      string       `json:"determination"`
	Status             string       `json:"status"`
	Severity           string       `json:"severity"`
	Tags               []string     `json:"tags"`
	Comments           []xdrComment `json:"comments"`
	Alerts             []xdrAlert   `json:"alerts"`
}

type xdrComment struct {
	Comment     string `json:"comment"`
	CreatedBy   string `json:"createdBy"`
	CreatedTime string `json:"createdTime"`
}

type xdrAlert struct {
	AlertID            string      `json:"alertId"`
	IncidentID         int64       `json:"incidentId"`
	ServiceSource      string      `json:"serviceSource"`
	CreationTime       string      `json:"creationTime"`
	LastUpdatedTime    string      `json:"lastUpdatedTime"`
	ResolvedTime       *string     `json:"resolvedTime"`
	FirstActivity      string      `json:"firstActivity"`
	LastActivity       string      `json:"lastActivity"`
	Title              string      `json:"title"`
	Description        string      `json:"description"`
	Category           string      `json:"category"`
	Status             string      `json:"status"`
	Severity           string      `json:"severity"`
	InvestigationID    *int64      `json:"investigationId"`
	InvestigationState string      `json:"investigationState"`
	Classification     *string     `json:"classification"`
	Determination      *string     `json:"determination"`
	DetectionSource    string      `json:"detectionSource"`
	DetectorID         string      `json:"detectorId"`
	AssignedTo         *string     `json:"assignedTo"`
	ActorName          *string     `json:"actorName"`
	ThreatFamilyName   *string     `json:"threatFamilyName"`
	MitreTechniques    []string    `json:"mitreTechniques"`
	Devices            []xdrDevice `json:"devices"`
	Entities           []xdrEntity `json:"entities"`
}

type xdrDevice struct {
	MdatpDeviceID string   `json:"mdatpDeviceId"`
	AadDeviceID   *string  `json:"aadDeviceId"`
	DeviceDNSName string   `json:"deviceDnsName"`
	OSPlatform    string   `json:"osPlatform"`
	Version       string   `json:"version"`
	OSProcessor   string   `json:"osProcessor"`
	OSBuild       int      `json:"osBuild"`
	HealthStatus  string   `json:"healthStatus"`
	RiskScore     string   `json:"riskScore"`
	RbacGroupName string   `json:"rbacGroupName"`
	RbacGroupID   int      `json:"rbacGroupId"`
	FirstSeen     string   `json:"firstSeen"`
	Tags          []string `json:"tags"`
}

// xdrEntity carries every key, unused ones null, as the real API does.
type xdrEntity struct {
	EntityType                string  `json:"entityType"`
	SHA1                      *string `json:"sha1"`
	SHA256                    *string `json:"sha256"`
	FileName                  *string `json:"fileName"`
	FilePath                  *string `json:"filePath"`
	ProcessID                 *int    `json:"processId"`
	ProcessCommandLine        *string `json:"processCommandLine"`
	ProcessCreationTime       *string `json:"processCreationTime"`
	ParentProcessID           *int    `json:"parentProcessId"`
	ParentProcessCreationTime *string `json:"parentProcessCreationTime"`
	IPAddress                 *string `json:"ipAddress"`
	URL                       *string `json:"url"`
	AccountName               *string `json:"accountName"`
	DomainName                *string `json:"domainName"`
	UserSid                   *string `json:"userSid"`
	AadUserID                 *string `json:"aadUserId"`
	UserPrincipalName         *string `json:"userPrincipalName"`
	MailboxDisplayName        *string `json:"mailboxDisplayName"`
	MailboxAddress            *string `json:"mailboxAddress"`
	ClusterBy                 *string `json:"clusterBy"`
	Sender                    *string `json:"sender"`
	Recipient                 *string `json:"recipient"`
	Subject                   *string `json:"subject"`
	DeliveryAction            *string `json:"deliveryAction"`
	SecurityGroupID           *string `json:"securityGroupId"`
	SecurityGroupName         *string `json:"securityGroupName"`
	RegistryHive              *string `json:"registryHive"`
	RegistryKey               *string `json:"registryKey"`
	RegistryValueType         *string `json:"registryValueType"`
	RegistryValue             *string `json:"registryValue"`
	DeviceID                  *string `json:"deviceId"`
}

func (in *incident) xdr() xdrIncident {
	x := xdrIncident{
		IncidentID: in.ID, IncidentURI: fmt.Sprintf("https://security.microsoft.com/incidents/%d?tid=%s", in.ID, in.TenantID),
		IncidentName: in.Name, CreatedTime: ts(in.Created), LastUpdateTime: ts(in.LastUpdate),
		AssignedTo: nullable(in.AssignedTo), Classification: xdrEnum(in.Classification), Determination: xdrDetermination(in.Determination),
		Status: xdrEnum(in.Status), Severity: xdrEnum(in.Severity), Tags: nonNil(in.Tags), Comments: []xdrComment{}, Alerts: []xdrAlert{},
	}
	if in.Severity == "unknown" {
		x.Severity = "UnSpecified"
	}
	if in.RedirectID != 0 {
		r := in.RedirectID
		x.RedirectIncidentID = &r
	}
	for _, c := range in.Comments {
		x.Comments = append(x.Comments, xdrComment{Comment: c.Text, CreatedBy: c.CreatedBy, CreatedTime: ts(c.Created)})
	}
	for _, a := range in.Alerts {
		xa := xdrAlert{AlertID: a.ID, IncidentID: in.ID, ServiceSource: a.ServiceSource, CreationTime: ts(a.Created),
			LastUpdatedTime: ts(a.Updated), ResolvedTime: nullTime(a.Resolved), FirstActivity: ts(a.First), LastActivity: ts(a.Last),
			Title: a.Title, Description: a.Description, Category: a.Category, Status: a.Status, Severity: xdrEnum(a.Severity),
			InvestigationState: a.InvestigationState, DetectionSource: a.DetectionSource, DetectorID: a.DetectorID,
			ThreatFamilyName: nullable(a.ThreatFamily), MitreTechniques: nonNil(a.MitreTechniques), Devices: []xdrDevice{}, Entities: []xdrEntity{}}
		if a.InvestigationID != 0 {
			id := a.InvestigationID
			xa.InvestigationID = &id
		}
		for _, d := range a.Devices {
			xa.Devices = append(xa.Devices, xdrDevice{MdatpDeviceID: d.ID, DeviceDNSName: d.DNSName, OSPlatform: d.OSPlatform, Version: d.Version,
				OSProcessor: "x64", OSBuild: d.OSBuild, HealthStatus: "Active", RiskScore: d.RiskScore, RbacGroupName: d.RBACGroup,
				RbacGroupID: d.RBACGroupID, FirstSeen: ts(d.FirstSeen), Tags: []string{}})
		}
		for _, e := range a.Entities {
			xe := xdrEntity{EntityType: e.Type, SHA1: nullable(e.SHA1), SHA256: nullable(e.SHA256), FileName: nullable(e.FileName),
				FilePath: nullable(e.FilePath), ProcessCommandLine: nullable(e.CommandLine), IPAddress: nullable(e.IP), URL: nullable(e.URL),
				AccountName: nullable(e.Account), DomainName: nullable(e.Domain), UserSid: nullable(e.UserSID), AadUserID: nullable(e.AADUser),
				UserPrincipalName: nullable(e.UPN), Sender: nullable(e.Sender), Recipient: nullable(e.Recipient), Subject: nullable(e.Subject),
				DeviceID: nullable(e.DeviceID)}
			if e.ProcessID != 0 {
				p := e.ProcessID
				xe.ProcessID = &p
			}
			xa.Entities = append(xa.Entities, xe)
		}
		x.Alerts = append(x.Alerts, xa)
	}
	return x
}

// --- Microsoft Graph shapes ---

type graphIncident struct {
	ID                 string         `json:"id"`
	TenantID           string         `json:"tenantId"`
	Status             string         `json:"status"`
	IncidentWebURL     string         `json:"incidentWebUrl"`
	RedirectIncidentID *string        `json:"redirectIncidentId"`
	DisplayName        string         `json:"displayName"`
	CreatedDateTime    string         `json:"createdDateTime"`
	LastUpdateDateTime string         `json:"lastUpdateDateTime"`
	AssignedTo         *string        `json:"assignedTo"`
	Classification     string         `json:"classification"`
	Determination      string         `json:"determination"`
	Severity           string         `json:"severity"`
	CustomTags         []string       `json:"customTags"`
	SystemTags         []string       `json:"systemTags"`
	Description        string         `json:"description"`
	LastModifiedBy     *string        `json:"lastModifiedBy"`
	ResolvingComment   *string        `json:"resolvingComment"`
	Summary            *string        `json:"summary"`
	Comments           []graphComment `json:"comments"`
	Alerts             *[]graphAlert  `json:"alerts,omitempty"`
}

type graphComment struct {
	Comment              string `json:"comment"`
	CreatedByDisplayName string `json:"createdByDisplayName"`
	CreatedDateTime      string `json:"createdDateTime"`
}

type graphAlert struct {
	ID                    string           `json:"id"`
	ProviderAlertID       string           `json:"providerAlertId"`
	IncidentID            string           `json:"incidentId"`
	Status                string           `json:"status"`
	Severity              string           `json:"severity"`
	Classification        *string          `json:"classification"`
	Determination         *string          `json:"determination"`
	ServiceSource         string           `json:"serviceSource"`
	DetectionSource       string           `json:"detectionSource"`
	DetectorID            string           `json:"detectorId"`
	TenantID              string           `json:"tenantId"`
	Title                 string           `json:"title"`
	Description           string           `json:"description"`
	RecommendedActions    string           `json:"recommendedActions"`
	Category              string           `json:"category"`
	AssignedTo            *string          `json:"assignedTo"`
	AlertWebURL           string           `json:"alertWebUrl"`
	IncidentWebURL        string           `json:"incidentWebUrl"`
	ActorDisplayName      *string          `json:"actorDisplayName"`
	ThreatDisplayName     *string          `json:"threatDisplayName"`
	ThreatFamilyName      *string          `json:"threatFamilyName"`
	MitreTechniques       []string         `json:"mitreTechniques"`
	CreatedDateTime       string           `json:"createdDateTime"`
	LastUpdateDateTime    string           `json:"lastUpdateDateTime"`
	ResolvedDateTime      *string          `json:"resolvedDateTime"`
	FirstActivityDateTime string           `json:"firstActivityDateTime"`
	LastActivityDateTime  string           `json:"lastActivityDateTime"`
	Comments              []graphComment   `json:"comments"`
	Evidence              []map[string]any `json:"evidence"`
	SystemTags            []string         `json:"systemTags"`
}

var graphServiceSource = map[string]string{
	"MicrosoftDefenderForEndpoint": "microsoftDefenderForEndpoint", "MicrosoftDefenderATP": "microsoftDefenderForEndpoint",
	"MicrosoftCloudAppSecurity": "microsoftDefenderForCloudApps", "OfficeATP": "microsoftDefenderForOffice365",
	"AzureAtp": "microsoftDefenderForIdentity", "MicrosoftDefenderForIdentity": "microsoftDefenderForIdentity",
	"AAD": "azureAdIdentityProtection",
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

func (in *incident) graph(prefer, expand bool) graphIncident {
	status := in.Status
	if status == "awaitingAction" && !prefer {
		status = "unknownFutureValue" // evolvable enum: hidden without Prefer: include-unknown-enum-members
	}
	g := graphIncident{
		ID: fmt.Sprint(in.ID), TenantID: in.TenantID, Status: status,
		IncidentWebURL: fmt.Sprintf("https://security.microsoft.com/incident2/%d/overview?tid=%s", in.ID, in.TenantID),
		DisplayName:    in.Name, CreatedDateTime: ts(in.Created), LastUpdateDateTime: ts(in.LastUpdate),
		AssignedTo: nullable(in.AssignedTo), Classification: in.Classification, Determination: in.Determination, Severity: in.Severity,
		CustomTags: nonNil(in.Tags), SystemTags: nonNil(in.SystemTags), Description: in.Description,
		LastModifiedBy: nullable(in.LastModifiedBy), Comments: []graphComment{},
	}
	if in.RedirectID != 0 {
		g.RedirectIncidentID = nullable(fmt.Sprint(in.RedirectID))
	}
	for _, c := range in.Comments {
		g.Comments = append(g.Comments, graphComment{Comment: c.Text, CreatedByDisplayName: c.CreatedBy, CreatedDateTime: ts(c.Created)})
	}
	if expand {
		al := make([]graphAlert, 0, len(in.Alerts))
		for _, a := range in.Alerts {
			al = append(al, in.graphAlert(a))
		}
		g.Alerts = &al
	}
	return g
}

func (in *incident) graphAlert(a *alert) graphAlert {
	src := graphServiceSource[a.ServiceSource]
	if src == "" {
		src = lowerFirst(a.ServiceSource)
	}
	g := graphAlert{
		ID: a.ID, ProviderAlertID: a.ID, IncidentID: fmt.Sprint(in.ID), Status: lowerFirst(a.Status), Severity: a.Severity,
		ServiceSource: src, DetectionSource: lowerFirst(a.DetectionSource), DetectorID: a.DetectorID, TenantID: in.TenantID,
		Title: a.Title, Description: a.Description, RecommendedActions: "Investigate the alert's evidence and contain affected assets.",
		Category: a.Category, AlertWebURL: fmt.Sprintf("https://security.microsoft.com/alerts/%s?tid=%s", a.ID, in.TenantID),
		IncidentWebURL:   fmt.Sprintf("https://security.microsoft.com/incidents/%d?tid=%s", in.ID, in.TenantID),
		ThreatFamilyName: nullable(a.ThreatFamily), ThreatDisplayName: nullable(a.ThreatFamily), MitreTechniques: nonNil(a.MitreTechniques),
		CreatedDateTime: ts(a.Created), LastUpdateDateTime: ts(a.Updated), ResolvedDateTime: nullTime(a.Resolved),
		FirstActivityDateTime: ts(a.First), LastActivityDateTime: ts(a.Last), Comments: []graphComment{}, Evidence: []map[string]any{}, SystemTags: []string{},
	}
	if g.Status == "active" {
		g.Status = "inProgress"
	}
	for _, d := range a.Devices {
		g.Evidence = append(g.Evidence, map[string]any{"@odata.type": "#microsoft.graph.security.deviceEvidence",
			"createdDateTime": ts(a.Created), "verdict": "suspicious", "remediationStatus": "none", "roles": []string{}, "tags": []string{},
			"mdeDeviceId": d.ID, "deviceDnsName": d.DNSName, "osPlatform": d.OSPlatform, "osBuild": d.OSBuild, "version": d.Version,
			"riskScore": strings.ToLower(d.RiskScore), "healthStatus": "active", "rbacGroupName": d.RBACGroup, "rbacGroupId": d.RBACGroupID,
			"firstSeenDateTime": ts(d.FirstSeen), "onboardingStatus": "onboarded", "defenderAvStatus": "updated"})
	}
	for _, e := range a.Entities {
		ev := map[string]any{"createdDateTime": ts(a.Created), "verdict": "suspicious", "remediationStatus": "none", "roles": []string{}, "tags": []string{}}
		switch e.Type {
		case "File":
			ev["@odata.type"] = "#microsoft.graph.security.fileEvidence"
			ev["fileDetails"] = map[string]any{"sha1": e.SHA1, "sha256": e.SHA256, "fileName": e.FileName, "filePath": e.FilePath}
			ev["mdeDeviceId"] = nullable(e.DeviceID)
		case "Process":
			ev["@odata.type"] = "#microsoft.graph.security.processEvidence"
			ev["processId"] = e.ProcessID
			ev["processCommandLine"] = e.CommandLine
			ev["imageFile"] = map[string]any{"sha1": e.SHA1, "fileName": e.FileName, "filePath": e.FilePath}
			ev["mdeDeviceId"] = nullable(e.DeviceID)
		case "User":
			ev["@odata.type"] = "#microsoft.graph.security.userEvidence"
			ev["userAccount"] = map[string]any{"accountName": e.Account, "domainName": e.Domain, "userSid": e.UserSID,
				"azureAdUserId": e.AADUser, "userPrincipalName": e.UPN}
		case "Ip":
			ev["@odata.type"] = "#microsoft.graph.security.ipEvidence"
			ev["ipAddress"] = e.IP
		case "Url":
			ev["@odata.type"] = "#microsoft.graph.security.urlEvidence"
			ev["url"] = e.URL
		case "MailMessage":
			ev["@odata.type"] = "#microsoft.graph.security.analyzedMessageEvidence"
			ev["senderIp"] = nil
			ev["recipientEmailAddress"] = e.Recipient
			ev["subject"] = e.Subject
			ev["p1Sender"] = map[string]any{"emailAddress": e.Sender}
		default:
			ev["@odata.type"] = "#microsoft.graph.security.alertEvidence"
		}
		g.Evidence = append(g.Evidence, ev)
	}
	return g
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// --- generation ---

type scenario struct {
	name, title, category, source, detection, family string
	techniques                                       []string
	entities                                         []string
}

var scenarios = []scenario{
	{"Multi-stage incident involving Execution & Command and control on one endpoint", "Suspicious PowerShell command line", "Execution", "MicrosoftDefenderForEndpoint", "WindowsDefenderAtp", "", []string{"T1059.001", "T1071"}, []string{"Process", "File", "Ip"}},
	{"Ransomware activity", "Ransomware activity", "Impact", "MicrosoftCloudAppSecurity", "MCAS", "", []string{"T1486"}, []string{"User", "Ip"}},
	{"'Mimikatz' hacktool was detected on one endpoint", "'Mimikatz' hacktool was detected", "Malware", "MicrosoftDefenderATP", "WindowsDefenderAv", "Mimikatz", nil, []string{"File"}},
	{"Email reported by user as malware or phish", "Email reported by user as malware or phish", "InitialAccess", "OfficeATP", "OfficeATP", "", []string{"T1566.001"}, []string{"MailMessage", "User", "Url"}},
	{"Impossible travel activity involving one user", "Impossible travel activity", "InitialAccess", "MicrosoftCloudAppSecurity", "MCAS", "", []string{"T1078"}, []string{"User", "Ip"}},
	{"Password spray attack against multiple users", "Password spray", "CredentialAccess", "MicrosoftDefenderForIdentity", "AzureAtp", "", []string{"T1110.003"}, []string{"User", "Ip"}},
	{"Suspicious LDAP query on one endpoint", "Suspicious LDAP query", "Discovery", "MicrosoftDefenderForEndpoint", "WindowsDefenderAtp", "", []string{"T1087.002"}, []string{"Process", "User"}},
	{"Qakbot malware was prevented on multiple endpoints", "Qakbot malware was prevented", "Malware", "MicrosoftDefenderForEndpoint", "WindowsDefenderAv", "Qakbot", []string{"T1204.002"}, []string{"File", "Process"}},
	{"Suspicious inbox manipulation rule involving one user", "Suspicious inbox manipulation rule", "DefenseEvasion", "MicrosoftCloudAppSecurity", "MCAS", "", []string{"T1564.008"}, []string{"User"}},
	{"Connection to a custom network indicator on one endpoint", "Connection to a custom network indicator", "CommandAndControl", "MicrosoftDefenderForEndpoint", "CustomTi", "", []string{"T1071.001"}, []string{"Url", "Ip", "Process"}},
}

var (
	firstNames = []string{"adele", "alex", "diego", "grady", "isaiah", "johanna", "lee", "megan", "nestor", "patti", "pradeep", "lynne"}
	depts      = []string{"fin", "hr", "eng", "sales", "ops", "legal"}
	analysts   = []string{"secop1@contoso.com", "secop2@contoso.com", "tier2@contoso.com", "ir-lead@contoso.com"}
	tags       = []string{"Demo", "Ransomware", "VIP", "Phishing", "Tier2", "Lateral movement", "Pen test"}
)

func hexStr(r *rand.Rand, n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[r.IntN(16)]
	}
	return string(b)
}

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

// newIncident generates one realistic incident; r makes it deterministic.
func newIncident(r *rand.Rand, tid, domain string, id int64, created time.Time, nAlerts int) *incident {
	sc := pick(r, scenarios)
	sev := pick(r, []string{"informational", "low", "medium", "medium", "high", "high"})
	in := &incident{ID: id, TenantID: tid, Name: sc.name, Created: created, LastUpdate: created.Add(time.Duration(r.IntN(5000)) * time.Millisecond).Truncate(100 * time.Nanosecond),
		Status: "active", Severity: sev, Classification: "unknown", Determination: "unknown",
		Description: "Microsoft observed " + strings.ToLower(sc.title) + " in your environment. Investigate the related alerts and evidence."}
	in.Created = in.Created.Truncate(100 * time.Nanosecond)
	if r.IntN(50) == 0 {
		in.Status = "awaitingAction"
	}
	if r.IntN(5) == 0 {
		in.Tags = []string{pick(r, tags)}
	}
	user := pick(r, firstNames)
	host := fmt.Sprintf("ws-%s-%03d.corp.%s", pick(r, depts), r.IntN(400), strings.TrimSuffix(domain, ".onmicrosoft.com")+".com")
	devID := hexStr(r, 40)
	for k := 0; k < nAlerts; k++ {
		c := created.Add(-time.Duration(r.IntN(120)) * time.Second).Truncate(100 * time.Nanosecond)
		a := &alert{ServiceSource: sc.source, DetectionSource: sc.detection, Created: c, Updated: c.Add(2 * time.Second), First: c.Add(-3 * time.Minute), Last: c.Add(-time.Minute),
			Title: sc.title, Description: sc.title + " was observed. " + in.Description, Category: sc.category, Status: "New", Severity: sev,
			InvestigationState: pick(r, []string{"UnsupportedAlertType", "Running", "Benign", "PendingApproval", "Queued"}),
			ThreatFamily:       sc.family, MitreTechniques: sc.techniques, DetectorID: fmt.Sprintf("%s-%s-%s-%s-%s", hexStr(r, 8), hexStr(r, 4), hexStr(r, 4), hexStr(r, 4), hexStr(r, 12))}
		switch sc.source {
		case "MicrosoftCloudAppSecurity":
			a.ID = "ca" + strings.ToUpper(hexStr(r, 8)+"-"+hexStr(r, 4)+"-"+hexStr(r, 4)+"-"+hexStr(r, 4)+"-"+hexStr(r, 12))
		case "OfficeATP":
			a.ID = "fa" + hexStr(r, 8) + "-" + hexStr(r, 4) + "-" + hexStr(r, 4) + "-" + hexStr(r, 4) + "-" + hexStr(r, 12)
		case "MicrosoftDefenderForIdentity":
			a.ID = "aa" + hexStr(r, 8) + "-" + hexStr(r, 4) + "-" + hexStr(r, 4) + "-" + hexStr(r, 4) + "-" + hexStr(r, 12)
		default:
			a.ID = fmt.Sprintf("da%d_%d", 637349914833441527+id*1000+int64(k), r.IntN(1_000_000_000))
			a.Devices = []device{{ID: devID, DNSName: host, OSPlatform: pick(r, []string{"Windows10", "Windows11", "WindowsServer2019", "WindowsServer2022"}),
				Version: "22H2", OSBuild: 19045, RBACGroup: "WDATP-Ring0", RBACGroupID: 9, RiskScore: pick(r, []string{"Low", "Medium", "High"}), FirstSeen: created.Add(-90 * 24 * time.Hour)}}
			a.InvestigationID = int64(1000 + r.IntN(90000))
		}
		for _, et := range sc.entities {
			e := entity{Type: et}
			switch et {
			case "File":
				e.SHA1, e.SHA256, e.FileName, e.FilePath, e.DeviceID = hexStr(r, 40), hexStr(r, 64), pick(r, []string{"mimikatz.exe", "invoice.docm", "payload.dll", "update.ps1"}), `C:\Users\`+user+`\Downloads`, devID
			case "Process":
				e.ProcessID, e.FileName, e.CommandLine, e.SHA1, e.DeviceID = 1000+r.IntN(60000), "powershell.exe", "powershell.exe -nop -w hidden -enc SQBFAFgA", hexStr(r, 40), devID
			case "User":
				e.Account, e.Domain, e.UPN, e.UserSID, e.AADUser = user, "corp", user+"@"+strings.TrimSuffix(domain, ".onmicrosoft.com")+".com",
					fmt.Sprintf("S-1-5-21-1721254763-462695806-1538882281-%d", 1000+r.IntN(9000)), fmt.Sprintf("%s-%s-%s-%s-%s", hexStr(r, 8), hexStr(r, 4), hexStr(r, 4), hexStr(r, 4), hexStr(r, 12))
			case "Ip":
				e.IP = fmt.Sprintf("%d.%d.%d.%d", 20+r.IntN(180), r.IntN(256), r.IntN(256), 1+r.IntN(254))
			case "Url":
				e.URL = fmt.Sprintf("https://%s.example-%d.net/login", pick(r, []string{"secure", "portal", "docs", "share"}), r.IntN(1000))
			case "MailMessage":
				e.Sender, e.Recipient, e.Subject = "billing@example-"+fmt.Sprint(r.IntN(100))+".net", user+"@contoso.com", "[EXTERNAL] Attention: invoice overdue"
			}
			a.Entities = append(a.Entities, e)
		}
		in.Alerts = append(in.Alerts, a)
	}
	return in
}
