// Package funchost is a local stand-in for the Azure Functions host, for
// machines without Azure Functions Core Tools. It reads host.json and the
// function.json files of a Function App folder, starts the custom handler
// with FUNCTIONS_CUSTOMHANDLER_PORT, waits for GET / as the host does, fires
// timers on their NCRONTAB schedules (and on demand at
// POST /admin/functions/{name}), polls the Storage queues of queue-triggered
// functions as the host's queue listener does (queue.go), and serves
// /api/... by forwarding the request or by the JSON envelope, as host.json
// says.
package funchost

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/defender-functions/defender-functions/infra/local/loopback"
	"github.com/defender-functions/defender-functions/shared/function"
	"github.com/google/uuid"
	"github.com/robfig/cron/v3"
)

// Options configure a host.
type Options struct {
	// AppDir holds host.json, the handler and one folder per function.
	AppDir string
	// Env is the handler's environment (the app settings); nil means os.Environ().
	Env []string
	// Addr is where the host listens (default 127.0.0.1:0).
	Addr string
	// Forwarding overrides host.json's enableForwardingHttpRequest when set.
	Forwarding *bool
	// NoTimers disables the schedules (runs on demand still work).
	NoTimers bool
	// NoQueues leaves the queues of queue-triggered functions unread.
	NoQueues bool
	// QueueLease is how long a taken queue message stays invisible between
	// renewals (default 10 minutes, the host's).
	QueueLease time.Duration
	// Stdout and Stderr receive the handler's output (default os.Stdout/os.Stderr).
	Stdout, Stderr io.Writer
	Logger         *slog.Logger
}

type binding struct {
	Name       string   `json:"name"`
	Type       string   `json:"type"`
	Direction  string   `json:"direction"`
	Schedule   string   `json:"schedule"`
	UseMonitor *bool    `json:"useMonitor"`
	Methods    []string `json:"methods"`
	Route      string   `json:"route"`
	AuthLevel  string   `json:"authLevel"`
	QueueName  string   `json:"queueName"`
	Connection string   `json:"connection"`
}

type fn struct {
	name     string
	bindings []binding
	trigger  binding
	status   struct{ last, next time.Time }
	running  sync.Mutex
}

func (f *fn) httpInOut() bool {
	var in, out int
	for _, b := range f.bindings {
		switch {
		case b.Type == "httpTrigger" && b.Direction == "in":
			in++
		case b.Type == "http" && b.Direction == "out":
			out++
		}
	}
	return in == 1 && out == 1 && len(f.bindings) == 2
}

// Host is a running local host.
type Host struct {
	URL        string
	opts       Options
	forwarding bool
	funcs      map[string]*fn
	handler    *exec.Cmd
	handlerURL string
	srv        *http.Server
	cron       *cron.Cron
	client     *http.Client
	log        *slog.Logger
	exited     <-chan struct{} // closed when the handler has exited
	queues     queueSettings
	stop       context.CancelFunc // ends the queue listeners
	listeners  sync.WaitGroup
}

// Start starts the handler and the host.
func Start(opts Options) (*Host, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if abs, err := filepath.Abs(opts.AppDir); err == nil {
		opts.AppDir = abs
	}
	if opts.Env == nil {
		opts.Env = os.Environ()
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	var hostJSON struct {
		CustomHandler struct {
			Description struct {
				DefaultExecutablePath string   `json:"defaultExecutablePath"`
				Arguments             []string `json:"arguments"`
				WorkingDirectory      string   `json:"workingDirectory"`
			} `json:"description"`
			EnableForwardingHTTPRequest bool `json:"enableForwardingHttpRequest"`
		} `json:"customHandler"`
		Extensions struct {
			Queues queueSettings `json:"queues"`
		} `json:"extensions"`
	}
	raw, err := os.ReadFile(filepath.Join(opts.AppDir, "host.json"))
	if err != nil {
		return nil, fmt.Errorf("funchost: %w", err)
	}
	if err := json.Unmarshal(raw, &hostJSON); err != nil {
		return nil, fmt.Errorf("funchost: host.json: %w", err)
	}
	h := &Host{opts: opts, funcs: map[string]*fn{}, log: opts.Logger, client: &http.Client{}}
	h.forwarding = hostJSON.CustomHandler.EnableForwardingHTTPRequest
	h.queues = hostJSON.Extensions.Queues.withDefaults()
	if opts.Forwarding != nil {
		h.forwarding = *opts.Forwarding
	}
	entries, err := os.ReadDir(opts.AppDir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		p := filepath.Join(opts.AppDir, e.Name(), "function.json")
		b, err := os.ReadFile(p)
		if !e.IsDir() || err != nil {
			continue
		}
		f := &fn{name: e.Name()}
		var fj struct {
			Bindings []binding `json:"bindings"`
		}
		if err := json.Unmarshal(b, &fj); err != nil {
			return nil, fmt.Errorf("funchost: %s: %w", p, err)
		}
		f.bindings = fj.Bindings
		for _, b := range fj.Bindings {
			if strings.HasSuffix(b.Type, "Trigger") {
				f.trigger = b
			}
		}
		h.funcs[f.name] = f
	}

	// The handler, on a free loopback port; picked again if the handler
	// exits before it answers (another process took the port meanwhile).
	if err := h.startHandler(hostJSON.CustomHandler.Description.DefaultExecutablePath, hostJSON.CustomHandler.Description.WorkingDirectory,
		hostJSON.CustomHandler.Description.Arguments); err != nil {
		return nil, err
	}

	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		h.Close()
		return nil, err
	}
	h.URL = "http://" + ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /admin/functions/{name}", h.adminRun)
	mux.HandleFunc("/api/", h.api)
	h.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go h.srv.Serve(ln)

	if !opts.NoTimers {
		h.cron = cron.New(cron.WithSeconds(), cron.WithLocation(time.UTC))
		for _, f := range h.funcs {
			if f.trigger.Type != "timerTrigger" {
				continue
			}
			spec, err := h.schedule(f.trigger.Schedule)
			if err != nil {
				h.Close()
				return nil, fmt.Errorf("funchost: %s: %w", f.name, err)
			}
			f := f
			if _, err := h.cron.AddFunc(spec, func() { h.fire(f, false) }); err != nil {
				h.Close()
				return nil, fmt.Errorf("funchost: %s: schedule %q: %w", f.name, spec, err)
			}
		}
		h.cron.Start()
	}
	if !opts.NoQueues {
		if err := h.listen(); err != nil {
			h.Close()
			return nil, err
		}
	}
	return h, nil
}

var settingRef = regexp.MustCompile(`^%([A-Za-z0-9_]+)%$`)

// schedule resolves %APP_SETTING% and checks the NCRONTAB expression (six
// fields with seconds; five are accepted as the host does).
func (h *Host) schedule(s string) (string, error) {
	if m := settingRef.FindStringSubmatch(s); m != nil {
		if s = h.setting(m[1]); s == "" {
			s = "0 */5 * * * *"
		}
	}
	if len(strings.Fields(s)) == 5 {
		s = "0 " + s
	}
	if _, err := cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow).Parse(s); err != nil {
		return "", err
	}
	return s, nil
}

// setting is the app setting name, or "".
func (h *Host) setting(name string) string {
	v := ""
	for _, kv := range h.opts.Env {
		if k, val, _ := strings.Cut(kv, "="); k == name {
			v = val
		}
	}
	return v
}

// startHandler starts the custom handler as the host does, with
// FUNCTIONS_CUSTOMHANDLER_PORT, and waits for it to answer GET /.
func (h *Host) startHandler(exe, workDir string, args []string) error {
	opts := h.opts
	if !filepath.IsAbs(exe) {
		exe = filepath.Join(opts.AppDir, exe)
	}
	proc, err := loopback.Start(func(port int) *exec.Cmd {
		cmd := exec.Command(exe, args...)
		cmd.Dir = opts.AppDir
		if workDir != "" {
			cmd.Dir = filepath.Join(opts.AppDir, workDir)
		}
		workerID := uuid.NewString()
		p := strconv.Itoa(port)
		cmd.Env = append(append([]string{}, opts.Env...), "FUNCTIONS_CUSTOMHANDLER_PORT="+p, "FUNCTIONS_HTTPWORKER_PORT="+p,
			"FUNCTIONS_CUSTOMHANDLER_WORKER_ID="+workerID, "FUNCTIONS_HTTPWORKER_ID="+workerID, "FUNCTIONS_APP_ROOT_PATH="+opts.AppDir)
		cmd.Stdout, cmd.Stderr = opts.Stdout, opts.Stderr
		return cmd
	}, answers, 60*time.Second)
	if err != nil {
		return fmt.Errorf("funchost: the handler %s: %w", exe, err)
	}
	h.handler, h.handlerURL, h.exited = proc.Cmd, "http://127.0.0.1:"+strconv.Itoa(proc.Port), proc.Exited
	return nil
}

// answers is the host's readiness probe: GET / answered.
func answers(port int) bool {
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/")
	if err == nil {
		resp.Body.Close()
	}
	return err == nil
}

// HandlerPID is the handler process's ID (to read its memory).
func (h *Host) HandlerPID() int { return h.handler.Process.Pid }

// Close stops the schedules, the host and the handler (SIGTERM, then kill).
func (h *Host) Close() error {
	if h.cron != nil {
		<-h.cron.Stop().Done()
	}
	if h.stop != nil {
		h.stop()
		h.listeners.Wait()
	}
	if h.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		h.srv.Shutdown(ctx)
		cancel()
	}
	if h.handler != nil && h.handler.Process != nil {
		h.handler.Process.Signal(syscall.SIGTERM)
		select {
		case <-h.exited:
		case <-time.After(30 * time.Second):
			h.handler.Process.Kill()
			<-h.exited
		}
	}
	return nil
}

func (h *Host) invocationHeaders(r *http.Request, id string) {
	r.Header.Set("X-Azure-Functions-HostVersion", "4.1040.0.0")
	r.Header.Set("X-Azure-Functions-InvocationId", id)
	r.Header.Add("User-Agent", "Azure-Functions-Host/4.1040.0.0")
}

// Run fires a timer function now, as POST /admin/functions/{name} does, and
// waits for it. It returns the handler's answer.
func (h *Host) Run(ctx context.Context, name string) (*Result, error) {
	f, ok := h.funcs[name]
	if !ok || f.trigger.Type != "timerTrigger" {
		return nil, fmt.Errorf("funchost: no timer function %q", name)
	}
	return h.invokeTimer(ctx, f, false)
}

// Result is the handler's answer to an envelope invocation.
type Result struct {
	Status  int
	Outputs map[string]json.RawMessage
	Logs    []string
}

func (h *Host) fire(f *fn, pastDue bool) {
	if !f.running.TryLock() {
		h.log.Info("Timer still running; this occurrence is skipped.", "function", f.name)
		return
	}
	defer f.running.Unlock()
	if _, err := h.invokeTimerLocked(context.Background(), f, pastDue); err != nil {
		h.log.Error("Timer failed.", "function", f.name, "err", err)
	}
}

func (h *Host) invokeTimer(ctx context.Context, f *fn, pastDue bool) (*Result, error) {
	f.running.Lock()
	defer f.running.Unlock()
	return h.invokeTimerLocked(ctx, f, pastDue)
}

// netDate writes a .NET DateTime as the host does: local offset, and
// "0001-01-01T00:00:00" with no offset for never.
func netDate(t time.Time) string {
	if t.IsZero() {
		return "0001-01-01T00:00:00"
	}
	return t.UTC().Format("2006-01-02T15:04:05.9999999+00:00") // Newtonsoft's K format: the fraction trimmed
}

func (h *Host) invokeTimerLocked(ctx context.Context, f *fn, pastDue bool) (*Result, error) {
	now := time.Now().UTC()
	timer := map[string]any{"Schedule": map[string]any{"AdjustForDST": true}, "IsPastDue": pastDue, "ScheduleStatus": nil}
	if f.trigger.UseMonitor == nil || *f.trigger.UseMonitor {
		// Next is the occurrence firing now; Last the previous one.
		timer["ScheduleStatus"] = map[string]any{"Last": netDate(f.status.last), "Next": netDate(now), "LastUpdated": netDate(f.status.last)}
	}
	body := map[string]any{
		"Data":     map[string]any{f.trigger.Name: timer},
		"Metadata": map[string]any{"sys": map[string]any{"MethodName": f.name, "UtcNow": now.Format(time.RFC3339Nano), "RandGuid": uuid.NewString()}},
	}
	res, err := h.envelope(ctx, f.name, body)
	if err == nil && res.Status/100 == 2 {
		f.status.last = now
	}
	return res, err
}

func (h *Host) envelope(ctx context.Context, name string, body any) (*Result, error) {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, "POST", h.handlerURL+"/"+name, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	h.invocationHeaders(req, uuid.NewString())
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Outputs map[string]json.RawMessage `json:"Outputs"`
		Logs    []string                   `json:"Logs"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		return &Result{Status: resp.StatusCode}, fmt.Errorf("funchost: %s answered HTTP %d with a body that is not JSON (the host fails such an invocation)", name, resp.StatusCode)
	}
	res := &Result{Status: resp.StatusCode, Outputs: out.Outputs, Logs: out.Logs}
	if resp.StatusCode/100 != 2 {
		return res, fmt.Errorf("funchost: %s failed (HTTP %d): %s", name, resp.StatusCode, strings.Join(out.Logs, "; "))
	}
	return res, nil
}

func (h *Host) adminRun(w http.ResponseWriter, r *http.Request) {
	f, ok := h.funcs[r.PathValue("name")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.WriteHeader(http.StatusAccepted)
	go h.fire(f, false)
}

// api routes /api/... to an HTTP function, forwarded or enveloped.
func (h *Host) api(w http.ResponseWriter, r *http.Request) {
	rel := strings.TrimPrefix(r.URL.Path, "/api/")
	var f *fn
	var params map[string]string
	for _, c := range h.funcs {
		if c.trigger.Type != "httpTrigger" {
			continue
		}
		route := c.trigger.Route
		if route == "" {
			route = c.name
		}
		if p, ok := function.MatchRoute(route, rel); ok {
			f, params = c, p
			break
		}
	}
	if f == nil {
		http.NotFound(w, r)
		return
	}
	allowed := len(f.trigger.Methods) == 0
	for _, m := range f.trigger.Methods {
		allowed = allowed || strings.EqualFold(m, r.Method)
	}
	if !allowed {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	id := uuid.NewString()
	if h.forwarding && f.httpInOut() {
		target, _ := url.Parse(h.handlerURL)
		proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
			// HttpRequestExtensions.ToHttpRequestMessage rebuilds the query
			// from the parsed collection: a repeated key becomes one value,
			// its values joined with commas.
			pr.Out.URL.RawQuery = joinedQuery(pr.In.URL.Query()).Encode()
			h.invocationHeaders(pr.Out, id)
		}}
		if r.ContentLength <= 0 {
			r.Body = http.NoBody // the host forwards a body only with Content-Length > 0
		}
		proxy.ServeHTTP(w, r)
		return
	}
	h.serveEnvelope(w, r, f, params)
}

// serveEnvelope builds Data.req as the host does and turns Outputs.res back
// into an HTTP response.
func (h *Host) serveEnvelope(w http.ResponseWriter, r *http.Request, f *fn, params map[string]string) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 100<<20))
	if err != nil {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		return
	}
	req, meta := httpEnvelope(r, body, f.name, params)
	res, err := h.envelope(r.Context(), f.name, map[string]any{"Data": map[string]any{"req": req}, "Metadata": meta})
	if err != nil {
		http.Error(w, "Internal Server Error", http.StatusInternalServerError)
		return
	}
	var out struct {
		StatusCode json.RawMessage   `json:"statusCode"`
		Headers    map[string]string `json:"headers"`
		Body       json.RawMessage   `json:"body"`
	}
	json.Unmarshal(res.Outputs["res"], &out)
	for k, v := range out.Headers {
		w.Header().Set(k, v)
	}
	status := 200
	if s := strings.Trim(string(out.StatusCode), `"`); s != "" {
		status, _ = strconv.Atoi(s)
	}
	w.WriteHeader(status)
	var s string
	if json.Unmarshal(out.Body, &s) == nil {
		io.WriteString(w, s)
	} else {
		w.Write(out.Body)
	}
}

// httpEnvelope is Data.req and the Metadata of an HTTP invocation, as
// HttpRequestExtensions.GetRequestAsJObject (azure-functions-host) and
// HttpTriggerAttributeBindingProvider.GetRequestBindingData (webjobs
// extensions) build them.
func httpEnvelope(r *http.Request, body []byte, name string, params map[string]string) (req, meta map[string]any) {
	headers := map[string][]string{}
	for k, v := range r.Header {
		headers[k] = v
	}
	q := r.URL.Query()
	req = map[string]any{"Url": "http://" + r.Host + r.URL.RequestURI(), "Method": r.Method, "Query": flatten(q), "Headers": headers,
		"Params": params, "Identities": []map[string]any{{"AuthenticationType": nil, "IsAuthenticated": false, "Claims": []any{}}}}
	// Only a body with a Content-Length: a chunked one is dropped.
	if r.ContentLength > 0 && len(body) > 0 {
		if ct := strings.ToLower(r.Header.Get("Content-Type")); strings.HasPrefix(ct, "application/octet-stream") || strings.Contains(ct, "multipart/") {
			req["Body"] = base64.StdEncoding.EncodeToString(body)
		} else {
			req["Body"] = string(body)
		}
	}
	// Metadata: a JSON body's properties, then each query parameter but
	// code (its last value), then each route value, the later over the
	// earlier; Query keeps a repeated parameter's last value.
	meta = map[string]any{}
	if b := strings.TrimSpace(string(body)); req["Body"] != nil && strings.HasPrefix(b, "{") && strings.HasSuffix(b, "}") {
		maps.Copy(meta, jsonBindingData(b))
	}
	last := map[string]string{}
	for k, v := range q {
		last[k] = v[len(v)-1]
		if k != "code" {
			meta[k] = serialized(last[k])
		}
	}
	for k, v := range params {
		meta[k] = serialized(v)
	}
	meta["Query"], meta["Headers"] = last, flatten(headers)
	meta["sys"] = map[string]any{"MethodName": name, "UtcNow": time.Now().UTC().Format(time.RFC3339Nano), "RandGuid": uuid.NewString()}
	return req, meta
}

// joinedQuery is the query as the host's GetQueryCollectionAsDictionary
// reads it: one value a key, repeated values joined with commas.
func joinedQuery(q url.Values) url.Values {
	out := url.Values{}
	for k, v := range q {
		out.Set(k, strings.Join(v, ","))
	}
	return out
}

func flatten(h map[string][]string) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		out[k] = strings.Join(v, ",")
	}
	return out
}
