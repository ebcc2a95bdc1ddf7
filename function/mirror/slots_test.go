package mirror

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestSlotsTakeTurns: when every slot is taken, freed slots go to the
// waiting reviews in turn, first come first served within one: a review
// that queued 6 lookups does not make the review that came after it wait
// for all 6; a waiter that gives up leaves the queue, and a slot granted to
// it as it gives up is handed on.
func TestSlotsTakeTurns(t *testing.T) {
	tests := []struct {
		name    string
		waiters []string // review of each waiter, in arrival order
		giveUp  string   // this waiter gives up before any slot frees
		want    []string // grant order as the one slot is released again and again
	}{
		{"one review: first come first served", []string{"a1", "a2", "a3"}, "", []string{"a1", "a2", "a3"}},
		{"a flood does not queue a later review behind all of it",
			[]string{"a1", "a2", "a3", "a4", "a5", "a6", "b1"}, "", []string{"a1", "b1", "a2", "a3", "a4", "a5", "a6"}},
		{"three reviews take turns",
			[]string{"a1", "a2", "a3", "b1", "b2", "c1"}, "", []string{"a1", "b1", "c1", "a2", "b2", "a3"}},
		{"a waiter that gives up leaves its place",
			[]string{"a1", "b1", "a2", "b2"}, "b1", []string{"a1", "b2", "a2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSlots(1)
			if err := s.acquire(t.Context(), nil); err != nil { // the slot is taken
				t.Fatal(err)
			}
			keys := map[byte]*byte{}
			var mu sync.Mutex
			var order []string
			cancels := map[string]context.CancelFunc{}
			done := make(chan string, len(tt.waiters))
			for i, w := range tt.waiters {
				if keys[w[0]] == nil {
					keys[w[0]] = new(byte)
				}
				ctx, cancel := context.WithCancel(t.Context())
				cancels[w] = cancel
				defer cancel()
				go func() {
					if err := s.acquire(ctx, keys[w[0]]); err != nil {
						done <- w + " gave up"
						return
					}
					mu.Lock()
					order = append(order, w)
					mu.Unlock()
					done <- w
				}()
				waitQueued(t, s, w, i+1)
			}
			if tt.giveUp != "" {
				cancels[tt.giveUp]()
				if got := <-done; got != tt.giveUp+" gave up" {
					t.Fatalf("got %q, want %s to give up", got, tt.giveUp)
				}
			}
			for range tt.want {
				s.release()
				<-done
			}
			if fmt.Sprint(order) != fmt.Sprint(tt.want) {
				t.Errorf("granted in the order %v, want %v", order, tt.want)
			}
			s.release()
			if inUse, _ := s.stats(); inUse != 0 {
				t.Errorf("%d slots in use at the end, want 0", inUse)
			}
		})
	}
}

// waitQueued waits until n waiters are queued (the last one named w), so
// that arrival order is the order of the test's list.
func waitQueued(t *testing.T, s *slots, w string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		queued := 0
		for e := s.turns.Front(); e != nil; e = e.Next() {
			queued += len(e.Value.(*turn).waiters)
		}
		s.mu.Unlock()
		if queued == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never queued (%d waiting, want %d)", w, queued, n)
		}
		time.Sleep(time.Millisecond)
	}
}
