// Package loadgen drives a mutating admission webhook with AdmissionReviews
// over keep-alive HTTPS and validates every answer. It is the library behind
// the test/load command and the soak and drain tests in test/soak.
//
// Two modes: a closed loop, where each of Workers goroutines sends its next
// request as soon as the previous one is answered, and an open loop at a
// fixed Rate, where requests are sent on schedule whatever the answers'
// latency, with at most MaxInFlight outstanding: a send that finds all of
// them busy is missed, one that leaves late is counted as late. Every run is
// bounded by Duration, Requests or its context, and every request by Timeout.
//
// ServeFloor is the other end: the floor server, the least a Go HTTPS
// webhook does per review, to compare the mutator's CPU per review with.
package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero values of Config.
const (
	DefaultWorkers      = 8
	DefaultMaxInFlight  = 128
	DefaultTimeout      = 10 * time.Second
	DefaultErrorBackoff = 10 * time.Millisecond
	// maxAnswerBytes bounds how much of an answer is read.
	maxAnswerBytes = 4 << 20
	// samplesPerKind is how many error messages are kept for each kind.
	samplesPerKind = 3
)

// Config is one run.
type Config struct {
	// Targets are the webhook URLs (https://127.0.0.1:8443/mutate);
	// requests go to them round-robin.
	Targets []string
	// Body is the AdmissionReview template; each request gets a fresh uid.
	Body []byte
	// Workers is the closed loop's concurrency (default 8).
	Workers int
	// Rate, when positive, selects the open loop: requests per second.
	Rate float64
	// MaxInFlight bounds outstanding requests in the open loop (default 128).
	MaxInFlight int
	// Duration and Requests bound the run; at least one is required. In
	// the open loop Requests counts scheduled sends, missed ones included.
	Duration time.Duration
	Requests int
	// Timeout bounds each request (default 10 s). Requests in flight when
	// the run ends, or its context is cancelled, are finished, not cut off.
	Timeout time.Duration
	// ExpectPatch makes an answer without a patch an error.
	ExpectPatch bool
	// TLS is the client TLS configuration for https targets.
	TLS *tls.Config
	// HTTP1 forces HTTP/1.1 keep-alive, what kube-apiserver speaks to
	// webhooks. HTTP2 offers only HTTP/2 (h2 over TLS, h2c prior
	// knowledge over http), so a server without it fails every request
	// rather than answering over HTTP/1.1; see also CheckHTTP2. With
	// neither, HTTP/2 is used when the server offers it over TLS (the soak
	// tests rely on that zero value); both is a configuration error.
	HTTP1, HTTP2 bool
	// RetryConnect retries a request that never reached a server (a
	// KindConnect failure) on the next target, each target at most once.
	RetryConnect bool
	// ErrorBackoff is the closed loop's pause after a failed request, so a
	// dead target is not hammered (default 10 ms; negative: none).
	ErrorBackoff time.Duration
	// LateAfter is how far behind schedule an open-loop send may leave
	// before it counts as late (default one interval, at least 1 ms).
	LateAfter time.Duration
	// OnResult, if set, is called with every request's result, from many
	// goroutines at once.
	OnResult func(Result)
}

// Result is the outcome of one request.
type Result struct {
	UID string
	// Target is the URL that answered, or that the last attempt failed on.
	Target string
	// Start is when the request was sent, Latency how long until its
	// answer was read and checked (or it failed).
	Start   time.Time
	Latency time.Duration
	// Kind is "" on success, else one of the Kind constants or http_<code>.
	Kind string
	Err  error
	// Retries counts attempts on other targets after connect failures.
	Retries int
	// Proto is the protocol of the answer, e.g. "HTTP/2.0".
	Proto string
}

// OK reports whether the request got a valid answer.
func (r Result) OK() bool { return r.Kind == "" }

// Summary is what a run did. Latency covers successful requests only.
type Summary struct {
	Mode         string              `json:"mode"` // "closed" or "open"
	Targets      []string            `json:"targets"`
	Workers      int                 `json:"workers,omitempty"`
	Rate         float64             `json:"rate,omitempty"`
	MaxInFlight  int                 `json:"maxInFlight,omitempty"`
	Requests     uint64              `json:"requests"` // sent, whatever the outcome
	OK           uint64              `json:"ok"`
	Errors       uint64              `json:"errors"`
	ErrorsByKind map[string]uint64   `json:"errorsByKind,omitempty"`
	ErrorSamples map[string][]string `json:"errorSamples,omitempty"`
	Retried      uint64              `json:"retried,omitempty"` // requests that needed another target
	// Protocol is the protocol of the answers (resp.Proto, e.g. "HTTP/1.1"
	// or "HTTP/2.0"), "mixed" when they differ (see Protocols), "" when
	// there were none.
	Protocol   string            `json:"protocol"`
	Protocols  map[string]uint64 `json:"protocols,omitempty"`
	Elapsed    Millis            `json:"elapsedMs"`
	Throughput float64           `json:"throughput"` // requests per second
	Latency    LatencySummary    `json:"latencyMs"`
	// Open loop only.
	Scheduled    uint64 `json:"scheduled,omitempty"`
	Missed       uint64 `json:"missed,omitempty"`
	Late         uint64 `json:"late,omitempty"`
	MaxSendDelay Millis `json:"maxSendDelayMs,omitempty"`

	hist *Histogram
}

// LatencySummary is the latency distribution.
type LatencySummary struct {
	Min  Millis `json:"min"`
	Mean Millis `json:"mean"`
	P50  Millis `json:"p50"`
	P90  Millis `json:"p90"`
	P99  Millis `json:"p99"`
	P999 Millis `json:"p999"`
	Max  Millis `json:"max"`
}

// Millis is a duration that encodes to JSON as fractional milliseconds.
type Millis time.Duration

// MarshalJSON implements json.Marshaler.
func (m Millis) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, float64(m)/1e6, 'f', 3, 64), nil
}

// UnmarshalJSON implements json.Unmarshaler, for readers of -json output.
func (m *Millis) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("decoding milliseconds: %w", err)
	}
	*m = Millis(math.Round(f * 1e6))
	return nil
}

func (m Millis) String() string { return fmtDuration(time.Duration(m)) }

// Histogram returns the latency histogram of successful requests.
func (s *Summary) Histogram() *Histogram { return s.hist }

// Run performs one run. It returns an error only for an invalid
// configuration; request failures are counted in the Summary.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	r, err := newRunner(cfg)
	if err != nil {
		return nil, err
	}
	defer r.client.CloseIdleConnections()
	if r.cfg.Rate > 0 {
		return r.open(ctx), nil
	}
	return r.closed(ctx), nil
}

type runner struct {
	cfg    Config
	review *Review
	uids   *uids
	client *http.Client
}

func newRunner(cfg Config) (*runner, error) {
	if len(cfg.Targets) == 0 {
		return nil, errors.New("no target URL")
	}
	if cfg.Duration <= 0 && cfg.Requests <= 0 {
		return nil, errors.New("unbounded run: set a duration or a number of requests")
	}
	if cfg.Rate < 0 || cfg.Duration < 0 || cfg.Requests < 0 {
		return nil, errors.New("negative rate, duration or number of requests")
	}
	if cfg.HTTP1 && cfg.HTTP2 {
		return nil, errors.New("HTTP1 and HTTP2 are exclusive")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.ErrorBackoff == 0 {
		cfg.ErrorBackoff = DefaultErrorBackoff
	}
	review, err := NewReview(cfg.Body)
	if err != nil {
		return nil, err
	}
	ids, err := newUIDs()
	if err != nil {
		return nil, err
	}
	conns := cfg.Workers
	if cfg.Rate > 0 {
		conns = cfg.MaxInFlight
	}
	return &runner{cfg: cfg, review: review, uids: ids, client: newClient(cfg.TLS, cfg.HTTP1, cfg.HTTP2, conns)}, nil
}

// newClient returns an HTTP client with keep-alive connections, up to conns
// of them idle per host, speaking the protocols Config.HTTP1 and
// Config.HTTP2 describe.
func newClient(tlsConfig *tls.Config, http1, http2 bool, conns int) *http.Client {
	if tlsConfig == nil {
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tlsConfig.Clone(),
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConns:        conns + 8,
		MaxIdleConnsPerHost: conns + 8,
		IdleConnTimeout:     60 * time.Second,
		DisableCompression:  true,
		Protocols:           new(http.Protocols),
	}
	switch {
	case http2:
		// Offering only h2 makes a server without HTTP/2 fail the TLS
		// handshake (no_application_protocol) instead of silently
		// answering over HTTP/1.1.
		tr.Protocols.SetHTTP2(true)
		tr.Protocols.SetUnencryptedHTTP2(true)
	case http1:
		tr.Protocols.SetHTTP1(true)
	default:
		tr.Protocols.SetHTTP1(true)
		tr.Protocols.SetHTTP2(true)
	}
	return &http.Client{Transport: tr}
}

// stats are one goroutine's tallies, merged at the end.
type stats struct {
	hist     *Histogram
	requests uint64
	ok       uint64
	retried  uint64
	kinds    map[string]uint64
	samples  map[string][]string
	protos   map[string]uint64
}

func newStats() *stats {
	return &stats{hist: NewHistogram(), kinds: map[string]uint64{}, samples: map[string][]string{}, protos: map[string]uint64{}}
}

func (s *stats) add(res Result) {
	s.requests++
	if res.Retries > 0 {
		s.retried++
	}
	if res.Proto != "" {
		s.protos[res.Proto]++
	}
	if res.OK() {
		s.ok++
		s.hist.Record(res.Latency)
		return
	}
	s.kinds[res.Kind]++
	if len(s.samples[res.Kind]) < samplesPerKind && res.Err != nil {
		s.samples[res.Kind] = append(s.samples[res.Kind], res.Err.Error())
	}
}

func (r *runner) summarize(mode string, all []*stats, elapsed time.Duration) *Summary {
	s := &Summary{
		Mode: mode, Targets: r.cfg.Targets,
		ErrorsByKind: map[string]uint64{}, ErrorSamples: map[string][]string{}, Protocols: map[string]uint64{},
		Elapsed: Millis(elapsed), hist: NewHistogram(),
	}
	for _, st := range all {
		s.Requests += st.requests
		s.OK += st.ok
		s.Retried += st.retried
		s.hist.Merge(st.hist)
		for k, n := range st.kinds {
			s.ErrorsByKind[k] += n
			s.Errors += n
		}
		for k, msgs := range st.samples {
			for _, m := range msgs {
				if len(s.ErrorSamples[k]) < samplesPerKind {
					s.ErrorSamples[k] = append(s.ErrorSamples[k], m)
				}
			}
		}
		for p, n := range st.protos {
			s.Protocols[p] += n
		}
	}
	for p := range s.Protocols {
		if s.Protocol == "" {
			s.Protocol = p
		} else {
			s.Protocol = "mixed"
		}
	}
	if elapsed > 0 {
		s.Throughput = float64(s.Requests) / elapsed.Seconds()
	}
	h := s.hist
	s.Latency = LatencySummary{
		Min: Millis(h.Min()), Mean: Millis(h.Mean()), P50: Millis(h.Percentile(50)), P90: Millis(h.Percentile(90)),
		P99: Millis(h.Percentile(99)), P999: Millis(h.Percentile(99.9)), Max: Millis(h.Max()),
	}
	return s
}

// closed runs Workers loops, each sending its next request when the last
// one is answered, until Duration, Requests or ctx ends the run.
func (r *runner) closed(ctx context.Context) *Summary {
	start := time.Now()
	var deadline time.Time
	if r.cfg.Duration > 0 {
		deadline = start.Add(r.cfg.Duration)
	}
	var (
		seq atomic.Uint64
		wg  sync.WaitGroup
		all = make([]*stats, r.cfg.Workers)
	)
	for w := range r.cfg.Workers {
		st := newStats()
		all[w] = st
		wg.Go(func() {
			for ctx.Err() == nil && (deadline.IsZero() || time.Now().Before(deadline)) {
				n := seq.Add(1) - 1
				if r.cfg.Requests > 0 && n >= uint64(r.cfg.Requests) {
					return
				}
				res := r.do(n)
				st.add(res)
				if !res.OK() && r.cfg.ErrorBackoff > 0 {
					sleepCtx(ctx, r.cfg.ErrorBackoff)
				}
			}
		})
	}
	wg.Wait()
	s := r.summarize("closed", all, time.Since(start))
	s.Workers = r.cfg.Workers
	return s
}

// open sends at Rate on a fixed schedule, with at most MaxInFlight
// requests outstanding, until Duration, Requests or ctx ends the run.
func (r *runner) open(ctx context.Context) *Summary {
	interval := time.Duration(float64(time.Second) / r.cfg.Rate)
	if interval <= 0 {
		interval = 1
	}
	lateAfter := r.cfg.LateAfter
	if lateAfter <= 0 {
		lateAfter = max(interval, time.Millisecond)
	}
	type slot struct {
		n   uint64
		due time.Time
	}
	var (
		slots = make(chan slot) // unbuffered: a send succeeds only if a sender is idle
		wg    sync.WaitGroup
		all   = make([]*stats, r.cfg.MaxInFlight)
		late  = make([]uint64, r.cfg.MaxInFlight)
		delay = make([]time.Duration, r.cfg.MaxInFlight)
	)
	for w := range r.cfg.MaxInFlight {
		st := newStats()
		all[w] = st
		wg.Go(func() {
			for sl := range slots {
				d := time.Since(sl.due)
				delay[w] = max(delay[w], d)
				if d > lateAfter {
					late[w]++
				}
				st.add(r.do(sl.n))
			}
		})
	}
	start := time.Now()
	var scheduled, missed uint64
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for n := uint64(0); ; n++ {
		if r.cfg.Requests > 0 && n >= uint64(r.cfg.Requests) {
			break
		}
		offset := time.Duration(float64(n) * float64(interval))
		if r.cfg.Duration > 0 && offset >= r.cfg.Duration {
			break
		}
		due := start.Add(offset)
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
			case <-timer.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		scheduled++
		select {
		case slots <- slot{n: n, due: due}:
		default:
			missed++
		}
	}
	timer.Stop()
	close(slots)
	wg.Wait()
	s := r.summarize("open", all, time.Since(start))
	s.Rate, s.MaxInFlight, s.Scheduled, s.Missed = r.cfg.Rate, r.cfg.MaxInFlight, scheduled, missed
	for w := range late {
		s.Late += late[w]
		s.MaxSendDelay = max(s.MaxSendDelay, Millis(delay[w]))
	}
	return s
}

// do sends request n, to the next target round-robin, retrying connect
// failures on the other targets when asked to.
func (r *runner) do(n uint64) Result {
	uid := r.uids.next()
	body := r.review.Body(uid)
	res := Result{UID: uid, Start: time.Now()}
	targets := r.cfg.Targets
	first := int(n % uint64(len(targets)))
	for attempt := range len(targets) {
		res.Target = targets[(first+attempt)%len(targets)]
		res.Kind, res.Proto, res.Err = r.send(res.Target, uid, body)
		if res.Kind != KindConnect || !r.cfg.RetryConnect || attempt == len(targets)-1 {
			break
		}
		res.Retries++
	}
	res.Latency = time.Since(res.Start)
	if r.cfg.OnResult != nil {
		r.cfg.OnResult(res)
	}
	return res
}

// send makes one attempt. Transport failures are classified by how far the
// attempt got, from an httptrace of its last connection attempt (the
// transport may itself retry, e.g. after an HTTP/2 GOAWAY).
func (r *runner) send(target, uid string, body []byte) (kind, proto string, err error) {
	// Not the run's context: a request in flight when the run ends is
	// finished, so that a cancelled run does not look like lost requests.
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
	defer cancel()
	var gotConn, gotFirstByte atomic.Bool
	trace := &httptrace.ClientTrace{
		GetConn:              func(string) { gotConn.Store(false) },
		GotConn:              func(httptrace.GotConnInfo) { gotConn.Store(true) },
		GotFirstResponseByte: func() { gotFirstByte.Store(true) },
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return KindTransport, "", fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return classify(err, gotConn.Load(), gotFirstByte.Load()), "", err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return classify(err, true, true), resp.Proto, fmt.Errorf("reading answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "http_" + strconv.Itoa(resp.StatusCode), resp.Proto,
			fmt.Errorf("status %s: %s", resp.Status, truncate(answer, 200))
	}
	kind, err = r.review.Check(uid, answer, r.cfg.ExpectPatch)
	return kind, resp.Proto, err
}

func classify(err error, gotConn, gotFirstByte bool) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return KindTimeout
	case !gotConn:
		return KindConnect
	case !gotFirstByte:
		return KindUnanswered
	}
	return KindTransport
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
