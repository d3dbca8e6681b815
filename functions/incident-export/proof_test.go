package incidentexport_test

import (
	"context"

	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/defender-functions/defender-functions/infra/build"
	"github.com/defender-functions/defender-functions/infra/local/emulators"
	"github.com/defender-functions/defender-functions/infra/local/loopback"

	"github.com/defender-functions/defender-functions/internal/devstack"
)

// buildHandler builds the custom handler as pack ships it.
func buildHandler(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "handler")
	if err := build.Local(emulators.RepoRoot(t), bin, build.Handler, build.AzureTags); err != nil {
		t.Fatal(err)
	}
	return bin
}

// handlerProc is one start of the handler, as the Functions host starts it.
type handlerProc struct {
	cmd  *exec.Cmd
	url  string
	done <-chan struct{}
}

func startHandler(t testing.TB, bin string, env []string, logs io.Writer) *handlerProc {
	t.Helper()
	logs = io.MultiWriter(logs, devstack.AuditLog())
	proc, err := loopback.Start(func(port int) *exec.Cmd {
		cmd := exec.Command(bin)
		cmd.Env = append(env, "FUNCTIONS_CUSTOMHANDLER_PORT="+strconv.Itoa(port))
		cmd.Stdout, cmd.Stderr = logs, logs
		return cmd
	}, func(port int) bool {
		// The host's probe: GET / answered 200.
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second)
	if err != nil {
		t.Fatalf("the handler: %v", err)
	}
	return &handlerProc{cmd: proc.Cmd, url: "http://127.0.0.1:" + strconv.Itoa(proc.Port), done: proc.Exited}
}

var timerPayload = `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"0001-01-01T00:00:00","Next":"%s","LastUpdated":"0001-01-01T00:00:00"},"IsPastDue":false}},"Metadata":{"sys":{"MethodName":"incident-export","UtcNow":"%s","RandGuid":"9a1b6f1e-4c52-4a7e-9e8b-3f0c2d7a1b55"}}}`

// queuePayload is the host's queueTrigger envelope (its metadata scalars
// JSON-encoded inside strings, as shared/customhandler's fixtures show).
var queuePayload = `{"Data":{"msg":%q},"Metadata":{"DequeueCount":"1","Id":"\"%s\"","InsertionTime":"%s","PopReceipt":"\"AgAAAAMAAAAAAAAAwYwKzZ1G3QE=\"","sys":{"MethodName":"incident-export-tenant","UtcNow":"%s","RandGuid":"5b6a1d3e-8f0c-4e2a-9b7d-1c2e3f4a5b6c"}}}`

func (p *handlerProc) runExport() (int, error) {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	return p.invoke("incident-export", fmt.Sprintf(timerPayload, now, now))
}

// runTask delivers incident-export-tenant the task of round n for tenant.
func (p *handlerProc) runTask(tenant string, n int) (int, error) {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	task := fmt.Sprintf(`{"tenant":%q,"round":"2026-12-02T00:%02d:00Z"}`, tenant, n%60)
	return p.invoke("incident-export-tenant", fmt.Sprintf(queuePayload, task, fmt.Sprint(rand.Int()), now, now))
}

func (p *handlerProc) invoke(name, payload string) (int, error) {
	req, _ := http.NewRequest("POST", p.url+"/"+name, bytes.NewReader([]byte(payload)))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("X-Azure-Functions-InvocationId", fmt.Sprint(rand.Int()))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestExactlyOnceUnderKills is the export's guarantee, on the real binary:
// 2.5k incidents that keep changing (batches sharing a timestamp, now and
// then more than a page of them), 10 % 5xx and
// some 429s, and the handler SIGKILLed at random points across 30 runs.
// The sink holds no version twice, nothing the devstack did not produce, and
// every version current when changes pause, by the next completed run.
//
// It runs for both APIs under the three ways a listing may behave: as a
// live tenant was observed to (no order to rely on, $orderby on the last
// update ignored), as documented (newest first, $orderby honoured), and as
// observed with replication lag (a share of updates listed only 2 s after
// their lastUpdate, EXPORT_LAG 3 s); and for the fan-out's queue tasks with
// two instances exporting the one tenant at once, each killed on its own.
func TestExactlyOnceUnderKills(t *testing.T) {
	if testing.Short() {
		t.Skip("the kill matrix runs in the full suite")
	}
	bin := buildHandler(t)
	// The S3 sink is proven by TestExportToS3 without kills: s3rver's listing
	// answers 500 once a client was killed in the middle of a PutObject.
	for _, tc := range []killCase{
		{name: "graph/file/observed", sink: "file", api: "graph", mode: orderObserved},
		{name: "graph/blob/observed", sink: "blob", api: "graph", mode: orderObserved},
		{name: "xdr/file/observed", sink: "file", api: "xdr", mode: orderObserved},
		{name: "graph/file/documented", sink: "file", api: "graph", mode: orderDocumented},
		{name: "xdr/file/documented", sink: "file", api: "xdr", mode: orderDocumented},
		{name: "graph/file/lag", sink: "file", api: "graph", mode: orderObservedLag},
		{name: "xdr/file/lag", sink: "file", api: "xdr", mode: orderObservedLag},
		// The fan-out's queue tasks, two instances invoked for the one
		// tenant at once (a redelivery overtaking a slow invocation, or the
		// timer's task beside a continuation), each killed on its own.
		{name: "graph/file/overlapping-tasks", sink: "file", api: "graph", mode: orderObserved, overlap: true},
		// The SIEMs, which keep every row: a kill after a batch was
		// accepted and before the checkpoint was saved sends it again, so
		// copies of a version are allowed, and the proof holds over one row
		// per version ID (the queries the README gives).
		// The batched layout: a batch every 200 ms, so that kills fall
		// between naming a batch, writing it and saving the checkpoint.
		{name: "graph/file-batches/observed", sink: "file", api: "graph", mode: orderObserved, batches: true},
		{name: "xdr/blob-batches/observed", sink: "blob", api: "xdr", mode: orderObserved, batches: true, chaosOnly: true},
		{name: "graph/logs/observed", sink: "logs", api: "graph", mode: orderObserved},
		// Splunk with indexer acknowledgement, 5 % of its requests lost by
		// the indexer (answered, never acknowledged, never indexed): a run
		// that waited in vain fails and counts nothing of it written.
		{name: "xdr/splunk-ack/observed", sink: "splunk", api: "xdr", mode: orderObserved, lostAcks: 0.05},
	} {
		// The runs mostly wait (pacing, kills at random moments): the cases
		// share the two cores well, each with its own devstack.
		t.Run(tc.name, func(t *testing.T) {
			if tc.chaosOnly && chaosScale() == 1 {
				t.Skip("make chaos runs it (CHAOS_SCALE > 1)")
			}
			t.Parallel()
			killMatrix(t, bin, tc)
		})
	}
}

type listingMode int

const (
	orderObserved listingMode = iota
	orderDocumented
	orderObservedLag
)

type killCase struct {
	name, sink, api string
	mode            listingMode
	// overlap runs each round as two instances given the same tenant's
	// queue task at once, instead of one timer invocation.
	overlap bool
	// batches writes the batched layout (EXPORT_LAYOUT=batches).
	batches bool
	// chaosOnly runs the case under make chaos alone (make test's time).
	chaosOnly bool
	// lostAcks is the share of Splunk requests whose acknowledgement never
	// comes; a completed run may then fail, saying so.
	lostAcks float64
}

// lagMs is the replication lag of orderObservedLag.
const lagMs = 2000

// killMatrix runs the matrix for one case.
func killMatrix(t *testing.T, bin string, tc killCase) {
	dir := t.TempDir()
	// make chaos runs the matrix at a larger scale (CHAOS_SCALE=4: 10k
	// incidents, 120 runs); make test at 1.
	scale := chaosScale()
	faults := devstack.Faults{ErrorRate: 0.10, ThrottleRate: 0.02, TruncateRate: 0.02}
	// A short EXPORT_LAG, so that windows settle over incidents that
	// keep changing while they are read.
	exportLag := "2s"
	if tc.mode == orderObservedLag {
		faults.LagShare, faults.LagMs = 0.3, lagMs
		exportLag = "3s"
	}
	// Rate limits at sixty times the documented pace, on both sides: the
	// matrix proves correctness, and 429s are injected besides.
	if tc.sink == "logs" || tc.sink == "splunk" {
		// The SIEM answers 429 (HEC: 503 busy) and 503 now and then.
		faults.SinkThrottleRate, faults.SinkErrorRate = 0.03, 0.03
	}
	s := devstack.Start(t, devstack.Options{Incidents: 2500 * scale, Dir: filepath.Join(dir, "local"), Faults: faults, DocumentedOrder: tc.mode == orderDocumented,
		TimeScale: 60, SIEM: devstack.SIEMOptions{HECAck: tc.sink == "splunk"}})
	s.LoseHECAcks(tc.lostAcks)
	sinkDir := filepath.Join(dir, "export")
	env := os.Environ()
	for k, v := range s.Settings() {
		env = append(env, k+"="+v)
	}
	env = append(env, "EXPORT_LOOKBACK=960h", "EXPORT_MAX_RUN=90s", "EXPORT_LAG="+exportLag)
	if tc.api == "xdr" {
		// Pages of 40, so that the ties stay larger than a page while they
		// settle: without a count, one instant is then cut by creation time.
		env = append(env, "DEFENDER_API=xdr", "DEFENDER_API_URL="+s.XDRURL, "DEFENDER_RATE_LIMITS=list=3000/1m", "EXPORT_PAGE_SIZE=40")
	} else {
		env = append(env, "DEFENDER_RATE_LIMITS=security=9000/1m")
	}
	// sinkView returns a directory holding what the sink holds (of a SIEM,
	// one row per version ID; siemCopies counts the others).
	sinkView := func() string { return sinkDir }
	siemCopies := 0
	switch tc.sink {
	case "file":
		env = append(env, "EXPORT_SINK=file://"+sinkDir, "STATE_STORE=file://"+filepath.Join(dir, "state"))
	case "blob":
		az := emulators.StartAzurite(t)
		for _, name := range []string{"exports", "state"} {
			c, _ := container.NewClientFromConnectionString(az.ConnectionString, name, nil)
			if _, err := c.Create(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
		}
		env = append(env, "EXPORT_SINK="+az.BlobURL+"/exports", "STATE_STORE="+az.BlobURL+"/state", "AzureWebJobsStorage="+az.ConnectionString)
		c, _ := container.NewClientFromConnectionString(az.ConnectionString, "exports", nil)
		sinkView = func() string { return mirrorBlobs(t, c) }
	case "logs":
		env = append(env, "EXPORT_SINK="+s.LogsStreamURL(), "STATE_STORE=file://"+filepath.Join(dir, "state"))
		sinkView = func() (dir string) {
			rows, copies := logsVersions(t, s)
			dir, siemCopies = mirrorRows(t, rows)
			siemCopies += copies
			return dir
		}
	case "splunk":
		env = append(env, "EXPORT_SINK="+s.HECEventURL(), "EXPORT_SPLUNK_ACK=true", "EXPORT_SPLUNK_ACK_TIMEOUT=2s", "STATE_STORE=file://"+filepath.Join(dir, "state"))
		sinkView = func() (dir string) { dir, siemCopies = mirrorRows(t, hecVersions(t, s)); return dir }
	case "s3":
		srv := emulators.StartS3(t, "exports")
		env = append(env, "EXPORT_SINK=s3://exports/defender", "EXPORT_S3_ENDPOINT="+srv.Endpoint, "STATE_STORE=file://"+filepath.Join(dir, "state"),
			"AWS_ACCESS_KEY_ID=S3RVER", "AWS_SECRET_ACCESS_KEY=S3RVER", "AWS_REGION=us-east-1")
		t.Setenv("AWS_ACCESS_KEY_ID", "S3RVER")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "S3RVER")
		t.Setenv("AWS_REGION", "us-east-1")
		sinkView = func() string { return mirrorS3(t, srv.Endpoint) }
	}
	if tc.batches {
		env = append(env, "EXPORT_LAYOUT=batches", "EXPORT_BATCH_EVERY=200ms")
		view := sinkView
		sinkView = func() string { dir, _ := unbatch(t, view()); return dir }
	}
	logs := &devstack.LogBuffer{}
	// The handlers' logs of a failed proof are kept for whoever debugs it
	// (a t.Fatalf in the loop ends the test before any line after it).
	t.Cleanup(func() {
		if t.Failed() {
			f := filepath.Join(os.TempDir(), fmt.Sprintf("proof-%s-%d.log", strings.ReplaceAll(tc.name, "/", "-"), time.Now().Unix()))
			if os.WriteFile(f, []byte(logs.String()), 0o600) == nil {
				t.Logf("the handlers' logs: %s", f)
			}
		}
	})

	var mu sync.Mutex
	changing := true
	stop := make(chan struct{})
	go func() {
		r := rand.New(rand.NewPCG(7, 7))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(40+r.IntN(80)) * time.Millisecond):
			}
			mu.Lock()
			switch {
			case !changing:
			case r.IntN(40) == 0:
				// A tie larger than a page of either API: over a hundred
				// incidents stamped with one lastUpdate.
				s.Mutate(150)
			default:
				s.Mutate(1 + r.IntN(4))
			}
			mu.Unlock()
		}
	}()
	defer close(stop)
	pause := func(p bool) { mu.Lock(); changing = !p; mu.Unlock() }

	r := rand.New(rand.NewPCG(1, 2))
	completed, killed := 0, 0
	var lostRuns atomic.Int32
	since := time.Now().Add(-960 * time.Hour)
	instances := 1
	if tc.overlap {
		instances = 2
	}
	for run := 1; run <= 30*scale; run++ {
		var wg sync.WaitGroup
		for range instances {
			// In the batched layout every third run is killed while it
			// writes a batch: within 5 ms of saying so.
			var batching <-chan struct{}
			var w io.Writer = logs
			own := &devstack.LogBuffer{} // this handler's lines
			w = io.MultiWriter(logs, own)
			if tc.batches && run%3 == 1 {
				ww := &watchWriter{w: w, sub: []byte(`"msg":"Writing a batch."`), seen: make(chan struct{})}
				w, batching = ww, ww.seen
			}
			p := startHandler(t, bin, env, w)
			kill := time.Duration(r.IntN(1200)) * time.Millisecond
			invoke := p.runExport
			if tc.overlap {
				invoke = func() (int, error) { return p.runTask(devstack.DefaultTenantID, run) }
			}
			if run%3 == 0 {
				// Let this one finish.
				completed++
			} else {
				killed++
			}
			wg.Go(func() {
				defer func() { p.cmd.Process.Signal(syscall.SIGKILL); <-p.done }()
				if run%3 != 0 {
					go invoke()
					if batching != nil {
						select {
						case <-batching:
							time.Sleep(time.Duration(r.IntN(5000)) * time.Microsecond)
						case <-time.After(5 * time.Second):
						}
						return
					}
					time.Sleep(kill)
					return
				}
				// Of two overlapping tasks one may stop on the other's
				// checkpoint: that too is a success.
				if st, err := invoke(); err != nil || st != 200 {
					// The handler's log line may reach the pipe after its answer.
					if tc.lostAcks > 0 && eventually(func() bool { return strings.Contains(own.String(), "did not acknowledge") }) {
						lostRuns.Add(1)
						return
					}
					t.Errorf("run %d: %d %v", run, st, err)
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		if run%10 == 0 {
			// Changes pause: the next completed run exports every current
			// version (once the lag has passed, it is listed).
			pause(true)
			if tc.mode == orderObservedLag {
				time.Sleep(lagMs*time.Millisecond + 100*time.Millisecond)
			}
			s.LoseHECAcks(0) // the indexers are well again
			p := startHandler(t, bin, env, logs)
			invoke := p.runExport
			if tc.overlap {
				invoke = func() (int, error) { return p.runTask(devstack.DefaultTenantID, run) }
			}
			if st, err := invoke(); err != nil || st != 200 {
				t.Fatalf("run %d after pause: %d %v", run, st, err)
			}
			p.cmd.Process.Signal(syscall.SIGTERM)
			<-p.done
			n := verify(t, s, sinkView(), devstack.DefaultTenantID, devstack.DefaultTenantID, since)
			t.Logf("after %d runs (%d killed): %d versions exported, each once", run, killed, n)
			s.LoseHECAcks(tc.lostAcks)
			pause(false)
		}
	}
	if completed == 0 || killed < 15*scale {
		t.Fatalf("completed %d, killed %d", completed, killed)
	}
	if tc.lostAcks > 0 {
		// Requests were lost (their events never indexed), and the proof
		// above held through it: they were sent again.
		if s.HECLost() == 0 {
			t.Fatal("the collector lost no request: the case proves nothing")
		}
		t.Logf("%d requests lost; %d completed runs failed on a lost acknowledgement", s.HECLost(), lostRuns.Load())
	}
	if tc.sink == "logs" || tc.sink == "splunk" {
		// Kills fell between a batch accepted and the checkpoint saved.
		if siemCopies == 0 {
			t.Fatal("no version was sent twice: no kill fell during a batch")
		}
		t.Logf("%d copies of a version sent again after a kill", siemCopies)
	}
	if tc.batches {
		adopted, again := strings.Count(logs.String(), "its versions count as written"), strings.Count(logs.String(), "its versions are read again")
		if adopted+again == 0 {
			t.Fatal("no kill fell between naming a batch and saving the checkpoint past it")
		}
		t.Logf("batches: %d written; after a kill, %d found written and adopted, %d found unwritten and read again",
			strings.Count(logs.String(), `"msg":"Batch written."`), adopted, again)
	}
	// The overlap happened: some task stopped on the other's checkpoint.
	if tc.overlap {
		n := strings.Count(logs.String(), "Another run is exporting this tenant")
		if n == 0 {
			t.Fatal("no task met another's checkpoint: the invocations did not overlap")
		}
		t.Logf("%d tasks stopped on the other's checkpoint", n)
	}
}

// eventually says whether ok holds within two seconds.
func eventually(ok func() bool) bool {
	for deadline := time.Now().Add(2 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// chaosScale is CHAOS_SCALE (default 1): how much larger the resilience
// tests run under make chaos.
func chaosScale() int {
	if n, err := strconv.Atoi(os.Getenv("CHAOS_SCALE")); err == nil && n > 1 {
		return n
	}
	return 1
}

// watchWriter closes seen when a write holds sub (a log line, whole).
type watchWriter struct {
	w    io.Writer
	sub  []byte
	once sync.Once
	seen chan struct{}
}

func (w *watchWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, w.sub) {
		w.once.Do(func() { close(w.seen) })
	}
	return w.w.Write(p)
}
