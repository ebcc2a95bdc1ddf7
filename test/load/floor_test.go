//go:build load

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mutator-dev/mutator/internal/testkit/syncbuf"
	"github.com/mutator-dev/mutator/test/load/loadgen"
)

// runMainEnv makes the test binary run the command's main instead of the
// tests, so that -serve-floor runs as its own process and gets a real
// SIGTERM.
const runMainEnv = "LOAD_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main() // exits
	}
	os.Exit(m.Run())
}

// floorProcess is `load -serve-floor` running as a child process.
type floorProcess struct {
	url    string
	cmd    *exec.Cmd
	stderr *syncbuf.Buffer
	done   chan error
}

func startFloorProcess(t *testing.T, certs loadgen.CertFiles, extra ...string) *floorProcess {
	t.Helper()
	port, err := loadgen.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	args := append([]string{"-serve-floor", "-listen", addr, "-tls-cert", certs.Cert, "-tls-key", certs.Key}, extra...)
	f := &floorProcess{url: "https://" + addr + "/mutate", stderr: new(syncbuf.Buffer), done: make(chan error, 1)}
	f.cmd = exec.Command(os.Args[0], args...)
	f.cmd.Env = append(os.Environ(), runMainEnv+"=1")
	f.cmd.Stderr = f.stderr
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { f.done <- f.cmd.Wait() }()
	t.Cleanup(func() {
		if f.cmd.ProcessState == nil {
			_ = f.cmd.Process.Kill()
			<-f.done
		}
	})
	return f
}

// stop sends SIGTERM and returns the exit error (nil for status 0).
func (f *floorProcess) stop(t *testing.T) error {
	t.Helper()
	if err := f.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-f.done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("the floor did not exit within 10 s of SIGTERM; stderr: %s", f.stderr.String())
		return nil
	}
}

func TestFloorMode(t *testing.T) {
	certs, err := loadgen.WriteCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		floorArgs  []string
		clientArgs []string
		wantCode   int
		wantProto  string // of every answer; "" when no run may happen
		wantKind   string // an error kind every request must have
		wantStderr string
	}{
		{name: "HTTP/1.1 by default", clientArgs: []string{"-requests", "50"}, wantProto: "HTTP/1.1"},
		{name: "closed loop for a duration", clientArgs: []string{"-workers", "4", "-duration", "300ms"}, wantProto: "HTTP/1.1"},
		{name: "open loop", clientArgs: []string{"-rate", "200", "-duration", "300ms"}, wantProto: "HTTP/1.1"},
		{
			// Why run.sh runs the floor without -expect-patch.
			name: "the floor never patches", clientArgs: []string{"-requests", "10", "-expect-patch"},
			wantCode: 1, wantProto: "HTTP/1.1", wantKind: loadgen.KindPatch,
		},
		{
			name: "-http2 against an HTTP/1.1-only server", clientArgs: []string{"-requests", "10", "-http2"},
			wantCode: 1, wantStderr: "did not negotiate HTTP/2",
		},
		{name: "-http2 against a floor offering HTTP/2", floorArgs: []string{"-http2"}, clientArgs: []string{"-requests", "50", "-http2"}, wantProto: "HTTP/2.0"},
		{name: "HTTP/1.1 against a floor offering HTTP/2", floorArgs: []string{"-http2"}, clientArgs: []string{"-requests", "50"}, wantProto: "HTTP/1.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			floor := startFloorProcess(t, certs, tt.floorArgs...)
			summaryFile := filepath.Join(t.TempDir(), "summary.json")
			var stdout, stderr bytes.Buffer
			args := append([]string{"-url", floor.url, "-cacert", certs.CA, "-body", podReview, "-wait-ready", "10s", "-summary-file", summaryFile}, tt.clientArgs...)
			code := run(context.Background(), args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s\nfloor: %s", code, tt.wantCode, stdout.String(), stderr.String(), floor.stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tt.wantStderr)
			}
			if tt.wantProto == "" {
				if stdout.Len() > 0 {
					t.Errorf("a run happened: %s", stdout.String())
				}
			} else {
				js, err := os.ReadFile(summaryFile)
				if err != nil {
					t.Fatalf("-summary-file: %v", err)
				}
				var sum loadgen.Summary
				if err := json.Unmarshal(js, &sum); err != nil {
					t.Fatalf("-summary-file is not a JSON summary: %v\n%s", err, js)
				}
				if sum.Requests == 0 || sum.Protocol != tt.wantProto || sum.Protocols[tt.wantProto] != sum.Requests {
					t.Errorf("%d requests, protocol %q %v, want all %s", sum.Requests, sum.Protocol, sum.Protocols, tt.wantProto)
				}
				if tt.wantKind == "" && sum.OK != sum.Requests {
					t.Errorf("ok %d of %d: %v %v", sum.OK, sum.Requests, sum.ErrorsByKind, sum.ErrorSamples)
				}
				if tt.wantKind != "" && sum.ErrorsByKind[tt.wantKind] != sum.Requests {
					t.Errorf("errors %v, want all %d of kind %s", sum.ErrorsByKind, sum.Requests, tt.wantKind)
				}
				if !strings.Contains(stdout.String(), "\nprotocol    "+tt.wantProto+"\n") {
					t.Errorf("text summary lacks the protocol line:\n%s", stdout.String())
				}
			}
			if err := floor.stop(t); err != nil {
				t.Errorf("floor after SIGTERM: %v, want exit status 0; stderr: %s", err, floor.stderr.String())
			}
			if !strings.Contains(floor.stderr.String(), "floor stopped") {
				t.Errorf("floor stderr lacks its shutdown line: %s", floor.stderr.String())
			}
		})
	}
}

// A floor that cannot listen must not exit 0: scripts rely on the status.
func TestFloorModeListenError(t *testing.T) {
	certs, err := loadgen.WriteCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-serve-floor", "-listen", "256.0.0.1:1", "-tls-cert", certs.Cert, "-tls-key", certs.Key}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "-serve-floor") {
		t.Errorf("exit %d, stderr %q; want 1 and a -serve-floor error", code, stderr.String())
	}
}
