package mirror

import (
	"container/list"
	"context"
	"sync"
)

// slots bounds the registry lookups in flight (MaxInFlight). When all are
// taken, waiting lookups are served in turn by review, first come first
// served within one: a slot that frees goes to the review that has waited
// longest for its turn, so a review with many lookups (an attacker's with
// hundreds of images, or many reviews of one flood) does not queue every
// other review behind all of them. A review waits behind at most one
// lookup of each other review that is waiting, not behind all of theirs.
type slots struct {
	mu     sync.Mutex
	free   int
	turns  *list.List // of *turn: reviews with waiting lookups, next first
	byKey  map[any]*turn
	inUse  int
	maxUse int
}

type turn struct {
	key     any
	el      *list.Element
	waiters []*slotWaiter // first come first
}

type slotWaiter struct {
	ready   chan struct{}
	granted bool
}

func newSlots(n int) *slots {
	return &slots{free: n, turns: list.New(), byKey: map[any]*turn{}}
}

// acquire takes a slot for the review key, waiting until one is free or ctx
// is done; it returns ctx's error then. A nil key is a review of its own.
func (s *slots) acquire(ctx context.Context, key any) error {
	// A review past its deadline takes no slot, free or not: its lookup
	// would reach the registry with nobody waiting for the answer.
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.free > 0 && s.turns.Len() == 0 {
		s.take()
		s.mu.Unlock()
		return nil
	}
	w := &slotWaiter{ready: make(chan struct{})}
	if key == nil {
		key = w
	}
	t := s.byKey[key]
	if t == nil {
		t = &turn{key: key}
		t.el = s.turns.PushBack(t)
		s.byKey[key] = t
	}
	t.waiters = append(t.waiters, w)
	s.mu.Unlock()

	select {
	case <-w.ready:
		if ctx.Err() == nil {
			return nil
		}
		// Granted as the waiter gave up: hand the slot on rather than
		// start a lookup nobody waits for.
		s.release()
		return ctx.Err()
	case <-ctx.Done():
	}
	s.mu.Lock()
	if w.granted {
		// Granted while giving up: hand the slot on.
		s.mu.Unlock()
		s.release()
		return ctx.Err()
	}
	for i, o := range t.waiters {
		if o == w {
			t.waiters = append(t.waiters[:i], t.waiters[i+1:]...)
			break
		}
	}
	if len(t.waiters) == 0 {
		s.turns.Remove(t.el)
		delete(s.byKey, t.key)
	}
	s.mu.Unlock()
	return ctx.Err()
}

// take counts a slot as used; s.mu is held.
func (s *slots) take() {
	s.free--
	s.inUse++
	if s.inUse > s.maxUse {
		s.maxUse = s.inUse
	}
}

// release gives a slot back: to the next review's first waiter, or free.
func (s *slots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inUse--
	s.free++
	front := s.turns.Front()
	if front == nil {
		return
	}
	t := front.Value.(*turn)
	w := t.waiters[0]
	t.waiters[0] = nil
	t.waiters = t.waiters[1:]
	if len(t.waiters) == 0 {
		s.turns.Remove(front)
		delete(s.byKey, t.key)
	} else {
		s.turns.MoveToBack(front)
	}
	s.take()
	w.granted = true
	close(w.ready)
}

// stats returns the slots in use now and the most ever in use at once.
func (s *slots) stats() (inUse, maxUse int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inUse, s.maxUse
}
