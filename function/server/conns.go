package server

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// coldAfter is how long a connection must have sat unused before the drain
// closes it. A client reuses its most recently used connection first, so a
// connection that has been quiet this long is the least likely to be
// carrying a request at the moment it is closed; one that is still in use
// closes itself cleanly, after an answer that says "Connection: close".
const coldAfter = time.Second

// drainPoll is how often the drain looks at the open connections.
const drainPoll = 20 * time.Millisecond

// connTracker knows every open connection, its state and since when.
type connTracker struct {
	mu    sync.Mutex
	conns map[net.Conn]connInfo
}

type connInfo struct {
	state http.ConnState
	since time.Time
}

func newConnTracker() *connTracker { return &connTracker{conns: map[net.Conn]connInfo{}} }

// track is the http.Server's ConnState hook.
func (t *connTracker) track(c net.Conn, state http.ConnState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch state {
	case http.StateClosed, http.StateHijacked:
		delete(t.conns, c)
	default:
		t.conns[c] = connInfo{state: state, since: time.Now()}
	}
}

// drain waits, up to timeout, until every connection is gone: busy ones
// close after their answer, and those that are new or idle and have been
// so for coldAfter are closed here. It reports whether all were gone in time.
func (t *connTracker) drain(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		t.mu.Lock()
		var cold []net.Conn
		for c, info := range t.conns {
			if (info.state == http.StateIdle || info.state == http.StateNew) && time.Since(info.since) >= coldAfter {
				cold = append(cold, c)
			}
		}
		left := len(t.conns)
		t.mu.Unlock()
		if left == 0 {
			return true
		}
		for _, c := range cold {
			_ = c.Close()
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(drainPoll)
	}
}
