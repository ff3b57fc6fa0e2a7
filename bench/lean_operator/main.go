// Command lean_operator is the least any operator could cost on this machine: a compiled program
// that makes exactly the API requests the finetune-operator makes for a FineTuneJob until it is
// Running (the run's Job, then a status write per phase), and nothing else. No spec parsing, no
// admission, no Events, no resync, no metrics: its manifests are templates that
// bench/operator_scale.py renders with the operator's own builders and transitions.
//
// bench/operator_scale.py --lean-operator runs it side by side with the direct path and the real
// operator, to tell what of the gap to the direct path any operator pays on this machine (the API
// server's cost of a FineTuneJob and its status writes) and what is the Python operator's own.
//
// It watches one namespace's FineTuneJobs and managed Jobs (client-go's way: list, then watch from
// the list's resourceVersion, over HTTP/2), and works on FineTuneJobs with a fixed number of workers,
// one worker per object at a time. It prints "ready" once both watches are open, and on SIGTERM its
// request counts as one JSON line.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Phases in the order a run goes through them; a status is written once per phase reached.
const (
	none = iota
	pending
	running
	succeeded
)

var phaseNames = map[int]string{pending: "Pending", running: "Running", succeeded: "Succeeded"}

// Templates come from bench/operator_scale.py: the operator's own Job and statuses for one object,
// with placeholders where the name, uid and Job name of each FineTuneJob go.
type Templates struct {
	APIVersion string                     `json:"apiVersion"`
	Plural     string                     `json:"plural"`
	Job        string                     `json:"job"`
	JobName    string                     `json:"jobName"`
	Statuses   map[string]json.RawMessage `json:"statuses"`
	JobLabels  string                     `json:"jobLabelSelector"`
}

type object struct {
	work    sync.Mutex // held by the worker handling this object
	metaMu  sync.Mutex
	meta    map[string]any // newest metadata seen, without managedFields
	rv      int64
	started bool
	written int
	want    atomic.Int64
}

type operator struct {
	server, namespace string
	client            *http.Client
	t                 Templates
	lastPhase         int // the last phase whose status it writes

	mu      sync.Mutex
	objects map[string]*object
	queued  map[string]bool
	queue   chan string

	jobPosts, jobConflicts, statusPuts, statusConflicts, gets, errors atomic.Int64
}

func main() {
	server := flag.String("server", "", "API server URL")
	ca := flag.String("ca", "", "CA certificate file")
	cert := flag.String("cert", "", "client certificate file")
	key := flag.String("key", "", "client key file")
	namespace := flag.String("namespace", "", "namespace to watch")
	templates := flag.String("templates", "", "templates JSON file")
	workers := flag.Int("workers", 32, "objects handled at once")
	statuses := flag.String("status", "all",
		"status writes: all (a write per phase, as the operator), pending (the run's start only), none")
	flag.Parse()

	op, err := newOperator(*server, *ca, *cert, *key, *namespace, *templates)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lean_operator:", err)
		os.Exit(2)
	}
	switch *statuses {
	case "all":
		op.lastPhase = succeeded
	case "pending":
		op.lastPhase = pending
	case "none":
		op.lastPhase = none
	default:
		fmt.Fprintln(os.Stderr, "lean_operator: --status must be all, pending or none")
		os.Exit(2)
	}
	for i := 0; i < *workers; i++ {
		go op.worker()
	}
	ftjReady, jobReady := make(chan struct{}), make(chan struct{})
	go op.watch(op.ftjPath(""), "", ftjReady, op.onFTJ)
	go op.watch("/apis/batch/v1/namespaces/"+op.namespace+"/jobs", op.t.JobLabels, jobReady, op.onJob)
	<-ftjReady
	<-jobReady
	fmt.Println("ready")

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	out, _ := json.Marshal(map[string]int64{
		"job_posts":        op.jobPosts.Load(),
		"job_conflicts":    op.jobConflicts.Load(),
		"status_puts":      op.statusPuts.Load(),
		"status_conflicts": op.statusConflicts.Load(),
		"ftj_gets":         op.gets.Load(),
		"errors":           op.errors.Load(),
	})
	fmt.Println(string(out))
}

func newOperator(server, ca, cert, key, namespace, templates string) (*operator, error) {
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, err
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", ca)
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(templates)
	if err != nil {
		return nil, err
	}
	var t Templates
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, fmt.Errorf("%s: %w", templates, err)
	}
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 64,
	}
	return &operator{
		server:    strings.TrimRight(server, "/"),
		namespace: namespace,
		client:    &http.Client{Transport: transport},
		t:         t,
		objects:   map[string]*object{},
		queued:    map[string]bool{},
		queue:     make(chan string, 1<<16),
	}, nil
}

func (op *operator) ftjPath(name string) string {
	p := "/apis/" + op.t.APIVersion + "/namespaces/" + op.namespace + "/" + op.t.Plural
	if name != "" {
		p += "/" + name
	}
	return p
}

func (op *operator) get(name string) *object {
	op.mu.Lock()
	defer op.mu.Unlock()
	o := op.objects[name]
	if o == nil {
		o = &object{}
		op.objects[name] = o
	}
	return o
}

// add queues name once; a name queued again while a worker handles it is handled again after.
func (op *operator) add(name string) {
	op.mu.Lock()
	defer op.mu.Unlock()
	if op.queued[name] {
		return
	}
	op.queued[name] = true
	op.queue <- name
}

func (op *operator) worker() {
	for name := range op.queue {
		o := op.get(name)
		o.work.Lock()
		op.mu.Lock()
		delete(op.queued, name)
		op.mu.Unlock()
		if err := op.handle(name, o); err != nil {
			op.errors.Add(1)
			fmt.Fprintf(os.Stderr, "lean_operator: %s: %v\n", name, err)
			go func() { time.Sleep(time.Second); op.add(name) }()
		}
		o.work.Unlock()
	}
}

func (op *operator) handle(name string, o *object) error {
	if !o.started {
		if err := op.createJob(name, o); err != nil {
			return err
		}
		o.started = true
		o.want.CompareAndSwap(none, pending)
	}
	for {
		want := min(int(o.want.Load()), op.lastPhase)
		if want <= o.written {
			return nil
		}
		if err := op.writeStatus(name, o, want); err != nil {
			return err
		}
		o.written = want
	}
}

func (op *operator) createJob(name string, o *object) error {
	o.metaMu.Lock()
	uid, _ := o.meta["uid"].(string)
	o.metaMu.Unlock()
	body := strings.NewReplacer("__FTJ_NAME__", name, "__FTJ_UID__", uid).Replace(op.t.Job)
	path := "/apis/batch/v1/namespaces/" + op.namespace + "/jobs"
	status, _, err := op.do("POST", path, []byte(body))
	if err != nil {
		return err
	}
	op.jobPosts.Add(1)
	switch {
	case status == http.StatusConflict:
		op.jobConflicts.Add(1)
		return nil
	case status >= 300:
		return fmt.Errorf("POST job: HTTP %d", status)
	}
	return nil
}

func (op *operator) writeStatus(name string, o *object, phase int) error {
	jobName := strings.ReplaceAll(op.t.JobName, "__FTJ_NAME__", name)
	st := strings.ReplaceAll(string(op.t.Statuses[phaseNames[phase]]), "__JOB_NAME__", jobName)
	for attempt := 0; attempt < 8; attempt++ {
		o.metaMu.Lock()
		body, err := json.Marshal(map[string]any{
			"apiVersion": op.t.APIVersion,
			"kind":       "FineTuneJob",
			"metadata":   o.meta,
			"status":     json.RawMessage(st),
		})
		o.metaMu.Unlock()
		if err != nil {
			return err
		}
		status, answer, err := op.do("PUT", op.ftjPath(name)+"/status", body)
		if err != nil {
			return err
		}
		op.statusPuts.Add(1)
		if status == http.StatusConflict {
			op.statusConflicts.Add(1)
			if err := op.refresh(name, o); err != nil {
				return err
			}
			continue
		}
		if status >= 300 {
			return fmt.Errorf("PUT status: HTTP %d: %.300s", status, answer)
		}
		op.remember(o, answer)
		return nil
	}
	return fmt.Errorf("PUT status: conflicts")
}

func (op *operator) refresh(name string, o *object) error {
	status, answer, err := op.do("GET", op.ftjPath(name), nil)
	op.gets.Add(1)
	if err != nil {
		return err
	}
	if status >= 300 {
		return fmt.Errorf("GET: HTTP %d", status)
	}
	op.remember(o, answer)
	return nil
}

// remember keeps an object's metadata if it is at least as new as the one held.
func (op *operator) remember(o *object, raw []byte) {
	var obj struct {
		Metadata map[string]any `json:"metadata"`
	}
	if json.Unmarshal(raw, &obj) != nil || obj.Metadata == nil {
		return
	}
	op.rememberMeta(o, obj.Metadata)
}

func (op *operator) rememberMeta(o *object, meta map[string]any) {
	delete(meta, "managedFields")
	rvText, _ := meta["resourceVersion"].(string)
	rv, _ := strconv.ParseInt(rvText, 10, 64)
	o.metaMu.Lock()
	defer o.metaMu.Unlock()
	if rv >= o.rv {
		o.meta, o.rv = meta, rv
	}
}

func (op *operator) do(method, path string, body []byte) (int, []byte, error) {
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, op.server+path, reader)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "lean-operator")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := op.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	return resp.StatusCode, answer, err
}

type event struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// watch lists path, then watches it from the list's resourceVersion; again from a new list on 410.
func (op *operator) watch(path, selector string, ready chan struct{}, handle func(string, []byte)) {
	once := sync.Once{}
	rv := ""
	for {
		q := url.Values{}
		if selector != "" {
			q.Set("labelSelector", selector)
		}
		if rv == "" {
			status, answer, err := op.do("GET", path+"?"+q.Encode(), nil)
			if err != nil || status >= 300 {
				time.Sleep(500 * time.Millisecond)
				continue
			}
			var list struct {
				Metadata struct {
					ResourceVersion string `json:"resourceVersion"`
				} `json:"metadata"`
				Items []json.RawMessage `json:"items"`
			}
			if json.Unmarshal(answer, &list) != nil {
				continue
			}
			for _, item := range list.Items {
				handle("ADDED", item)
			}
			rv = list.Metadata.ResourceVersion
		}
		q.Set("watch", "true")
		q.Set("resourceVersion", rv)
		q.Set("allowWatchBookmarks", "true")
		q.Set("timeoutSeconds", "300")
		req, _ := http.NewRequest("GET", op.server+path+"?"+q.Encode(), nil)
		req.Header.Set("Accept", "application/json")
		resp, err := op.client.Do(req)
		if err != nil {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		once.Do(func() { close(ready) })
		decoder := json.NewDecoder(bufio.NewReaderSize(resp.Body, 1<<16))
		for {
			var e event
			if err := decoder.Decode(&e); err != nil {
				break
			}
			if e.Type == "ERROR" {
				rv = ""
				break
			}
			var meta struct {
				Metadata struct {
					ResourceVersion string `json:"resourceVersion"`
				} `json:"metadata"`
			}
			if json.Unmarshal(e.Object, &meta) == nil && meta.Metadata.ResourceVersion != "" {
				rv = meta.Metadata.ResourceVersion
			}
			if e.Type != "BOOKMARK" {
				handle(e.Type, e.Object)
			}
		}
		resp.Body.Close()
	}
}

func (op *operator) onFTJ(kind string, raw []byte) {
	if kind == "DELETED" {
		return
	}
	var obj struct {
		Metadata map[string]any `json:"metadata"`
		Status   struct {
			Phase string `json:"phase"`
		} `json:"status"`
	}
	if json.Unmarshal(raw, &obj) != nil {
		return
	}
	name, _ := obj.Metadata["name"].(string)
	o := op.get(name)
	op.rememberMeta(o, obj.Metadata)
	if obj.Status.Phase == "" {
		op.add(name) // a new FineTuneJob (or one whose first write is still on its way)
	}
}

func (op *operator) onJob(kind string, raw []byte) {
	if kind == "DELETED" {
		return
	}
	var job struct {
		Metadata struct {
			OwnerReferences []struct {
				Kind string `json:"kind"`
				Name string `json:"name"`
			} `json:"ownerReferences"`
		} `json:"metadata"`
		Status struct {
			Ready      int `json:"ready"`
			Conditions []struct {
				Type   string `json:"type"`
				Status string `json:"status"`
			} `json:"conditions"`
		} `json:"status"`
	}
	if json.Unmarshal(raw, &job) != nil {
		return
	}
	owner := ""
	for _, ref := range job.Metadata.OwnerReferences {
		if ref.Kind == "FineTuneJob" {
			owner = ref.Name
		}
	}
	if owner == "" {
		return
	}
	phase := none
	if job.Status.Ready > 0 {
		phase = running
	}
	for _, c := range job.Status.Conditions {
		if c.Type == "Complete" && c.Status == "True" {
			phase = succeeded
		}
	}
	o := op.get(owner)
	for {
		current := o.want.Load()
		if int64(phase) <= current || o.want.CompareAndSwap(current, int64(phase)) {
			break
		}
	}
	if int64(phase) > int64(pending) {
		op.add(owner)
	}
}
