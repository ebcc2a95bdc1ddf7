// Command load drives the mutator with AdmissionReviews over keep-alive HTTPS
// and checks every answer: HTTP 200, an AdmissionReview whose response.uid
// is the request's, allowed, and (with -expect-patch) a JSON patch that
// applies to the request's object. It exits 1 if any request failed.
//
//	go run ./test/load -url https://127.0.0.1:8443/mutate -cacert ca.crt -workers 8 -duration 10s
//	go run ./test/load -url ... -cacert ca.crt -rate 1000 -duration 10s -json
//	go run ./test/load -gen-cert DIR     # CA and serving certificate for 127.0.0.1
//	go run ./test/load -serve-floor -listen 127.0.0.1:8444 -tls-cert DIR/tls.crt -tls-key DIR/tls.key
//
// It speaks HTTP/1.1 over keep-alive connections, as kube-apiserver does to
// webhooks; -http2 speaks HTTP/2 only and fails unless the server offers it.
//
// -serve-floor runs the floor server instead: the least a Go HTTPS webhook
// does per review (see loadgen.FloorHandler), to compare the mutator's CPU
// per review with. It stops on SIGTERM or SIGINT and exits 0.
//
// The closed loop (default) keeps -workers requests outstanding; -rate
// selects an open loop that sends on a fixed schedule with at most
// -max-inflight outstanding, counting sends that were missed (all busy) or
// left late. See package loadgen.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mutator-dev/mutator/test/load/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the command; it returns the exit status: 0 when every request got
// a valid answer, 1 when some failed, 2 for usage errors.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		urls        = fs.String("url", "https://127.0.0.1:8443/mutate", "webhook URL; a comma-separated list is used round-robin")
		workers     = fs.Int("workers", loadgen.DefaultWorkers, "closed loop: concurrent requests")
		duration    = fs.Duration("duration", 0, "how long to send (default 10s unless -requests is set)")
		requests    = fs.Int("requests", 0, "how many requests to send (open loop: scheduled sends)")
		rate        = fs.Float64("rate", 0, "open loop: requests per second on a fixed schedule")
		maxInFlight = fs.Int("max-inflight", loadgen.DefaultMaxInFlight, "open loop: most requests outstanding; a send that finds all busy is missed")
		bodyFile    = fs.String("body", "test/testdata/pod-review.json", "AdmissionReview template; every request gets a fresh uid")
		caFile      = fs.String("cacert", "", "PEM file of the CA that signed the server's certificate")
		insecure    = fs.Bool("insecure", false, "do not verify the server's certificate")
		http2       = fs.Bool("http2", false, "speak HTTP/2 only and fail unless the server negotiates it (default: HTTP/1.1, as kube-apiserver); with -serve-floor, offer HTTP/2 too")
		http1       = fs.Bool("http1", false, "deprecated and ignored: HTTP/1.1 is the default")
		expectPatch = fs.Bool("expect-patch", false, "an answer without a JSON patch is an error")
		timeout     = fs.Duration("timeout", loadgen.DefaultTimeout, "per-request timeout")
		retry       = fs.Bool("retry-connect", false, "retry a request that could not connect on the next -url")
		jsonOut     = fs.Bool("json", false, "print the summary as JSON")
		waitReady   = fs.Duration("wait-ready", 0, "first wait up to this long for GET /health/readiness to answer 200")
		checkReady  = fs.Bool("check-ready", false, "only wait for readiness (up to -wait-ready, default 30s), then exit")
		genCert     = fs.String("gen-cert", "", "write ca.crt, tls.crt and tls.key for 127.0.0.1 into this directory and exit")
		freePort    = fs.Bool("free-port", false, "print a free TCP port and exit (for scripts)")
		summaryFile = fs.String("summary-file", "", "also write the summary as JSON to this file (for scripts)")
		serveFloor  = fs.Bool("serve-floor", false, "serve the floor webhook on -listen with -tls-cert and -tls-key until SIGTERM, instead of sending load")
		listen      = fs.String("listen", "127.0.0.1:8444", "with -serve-floor: address to listen on")
		tlsCert     = fs.String("tls-cert", "", "with -serve-floor: serving certificate (PEM), e.g. TLS_CERT_FILE's")
		tlsKey      = fs.String("tls-key", "", "with -serve-floor: its private key (PEM)")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: load [flags]\n\nPOSTs AdmissionReviews to a webhook and validates every answer.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "load: unexpected arguments %q\n", fs.Args())
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "load:", err)
		return 2
	}

	if *http1 {
		if *http2 {
			return fail(errors.New("-http1 and -http2 conflict"))
		}
		fmt.Fprintln(stderr, "load: -http1 is deprecated and ignored: HTTP/1.1 is the default")
	}

	switch {
	case *serveFloor:
		return runFloor(ctx, *listen, loadgen.FloorOptions{CertFile: *tlsCert, KeyFile: *tlsKey, HTTP2: *http2}, stderr)
	case *genCert != "":
		files, err := loadgen.WriteCerts(*genCert)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "CA %s\ncertificate %s\nkey %s\n", files.CA, files.Cert, files.Key)
		return 0
	case *freePort:
		port, err := loadgen.FreePort()
		if err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, port)
		return 0
	}

	targets := splitList(*urls)
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if *caFile != "" {
		var err error
		if tlsConfig, err = loadgen.LoadCA(*caFile); err != nil {
			return fail(err)
		}
	}
	tlsConfig.InsecureSkipVerify = *insecure // only when asked for

	if *checkReady && *waitReady == 0 {
		*waitReady = 30 * time.Second
	}
	if *waitReady > 0 {
		wctx, cancel := context.WithTimeout(ctx, *waitReady)
		for _, t := range targets {
			if err := loadgen.WaitReady(wctx, tlsConfig, t, nil); err != nil {
				cancel()
				fmt.Fprintln(stderr, "load:", err)
				return 1
			}
		}
		cancel()
		if *checkReady {
			return 0
		}
	}
	if *http2 {
		// Fail before the run, with one clear message, rather than with
		// every request of it.
		for _, t := range targets {
			if err := loadgen.CheckHTTP2(ctx, tlsConfig, t); err != nil {
				fmt.Fprintln(stderr, "load: -http2:", err)
				return 1
			}
		}
	}

	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		return fail(fmt.Errorf("reading -body: %w", err))
	}
	if *duration == 0 && *requests == 0 {
		*duration = 10 * time.Second
	}
	sum, err := loadgen.Run(ctx, loadgen.Config{
		Targets: targets, Body: body, Workers: *workers, Rate: *rate, MaxInFlight: *maxInFlight,
		Duration: *duration, Requests: *requests, Timeout: *timeout, ExpectPatch: *expectPatch,
		TLS: tlsConfig, HTTP1: !*http2, HTTP2: *http2, RetryConnect: *retry,
	})
	if err != nil {
		return fail(err)
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(sum)
	} else {
		err = sum.WriteText(stdout)
	}
	if err != nil {
		return fail(fmt.Errorf("writing summary: %w", err))
	}
	if *summaryFile != "" {
		if err := writeSummaryFile(*summaryFile, sum); err != nil {
			return fail(err)
		}
	}
	if sum.Errors > 0 {
		return 1
	}
	return 0
}

// runFloor serves the floor until ctx ends (SIGTERM), returning 0 after a
// clean shutdown so that scripts can require it.
func runFloor(ctx context.Context, addr string, opts loadgen.FloorOptions, stderr io.Writer) int {
	if opts.CertFile == "" || opts.KeyFile == "" {
		fmt.Fprintln(stderr, "load: -serve-floor needs -tls-cert and -tls-key")
		return 2
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(stderr, "load: -serve-floor:", err)
		return 1
	}
	fmt.Fprintf(stderr, "load: floor listening on https://%s (HTTP/2 offered: %t)\n", ln.Addr(), opts.HTTP2)
	if err := loadgen.ServeFloor(ctx, ln, opts); err != nil {
		fmt.Fprintln(stderr, "load: -serve-floor:", err)
		return 1
	}
	fmt.Fprintln(stderr, "load: floor stopped")
	return 0
}

func writeSummaryFile(path string, sum *loadgen.Summary) error {
	b, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding summary: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing -summary-file: %w", err)
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
