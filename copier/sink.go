package function

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.uber.org/zap"
)

// Bounds of the result events waiting for the sink. Copies are slow and few
// (COPY_MAX_CONCURRENT), so a small queue is plenty; an event that does not
// fit is dropped and logged, never waited for.
const (
	sinkQueue    = 256
	sinkAttempts = 3
	sinkTimeout  = 5 * time.Second
	sinkBackoff  = 200 * time.Millisecond
)

// sink sends result events to K_SINK from one background worker, so that
// a slow sink delays no reply.
type sink struct {
	client cloudevents.Client
	idle   interface{ CloseIdleConnections() }
	logger *zap.Logger

	mu     sync.RWMutex
	closed bool
	queue  chan cloudevents.Event

	stop    context.Context
	abandon context.CancelFunc
	done    chan struct{}

	sent, dropped, failed atomic.Uint64
}

func newSink(target string, logger *zap.Logger) (*sink, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	client, err := cloudevents.NewClientHTTP(cehttp.WithTarget(target), cehttp.WithClient(http.Client{Transport: transport}))
	if err != nil {
		return nil, fmt.Errorf("creating CloudEvents client for K_SINK %q: %w", target, err)
	}
	s := &sink{client: client, idle: transport, logger: logger, queue: make(chan cloudevents.Event, sinkQueue), done: make(chan struct{})}
	s.stop, s.abandon = context.WithCancel(context.Background())
	go s.run()
	return s, nil
}

// send queues ev without blocking.
func (s *sink) send(ev cloudevents.Event) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		s.drop(ev, "sink closed")
		return
	}
	select {
	case s.queue <- ev:
	default:
		s.drop(ev, "queue full: the sink is slow or unreachable")
	}
}

func (s *sink) drop(ev cloudevents.Event, why string) {
	s.dropped.Add(1)
	s.logger.Warn("dropping copy result event: "+why, zap.String("id", ev.ID()), zap.String("type", ev.Type()), zap.String("subject", ev.Subject()))
}

func (s *sink) run() {
	defer close(s.done)
	for ev := range s.queue {
		s.deliver(ev)
	}
}

// deliver sends one event, structured mode as the mutator's audit events,
// retrying failures with a doubling backoff.
func (s *sink) deliver(ev cloudevents.Event) {
	backoff := sinkBackoff
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(s.stop, sinkTimeout)
		res := s.client.Send(cloudevents.WithEncodingStructured(ctx), ev)
		cancel()
		if cloudevents.IsACK(res) {
			s.sent.Add(1)
			return
		}
		if attempt >= sinkAttempts || s.stop.Err() != nil {
			s.failed.Add(1)
			s.logger.Warn("sending copy result event failed", zap.String("id", ev.ID()), zap.String("type", ev.Type()),
				zap.String("subject", ev.Subject()), zap.Int("attempts", attempt), zap.Error(res))
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-s.stop.Done():
			t.Stop()
		}
		backoff *= 2
	}
}

// close stops accepting events and sends those queued until ctx is done.
func (s *sink) close(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.queue)
	}
	s.mu.Unlock()
	var err error
	select {
	case <-s.done:
	case <-ctx.Done():
		s.abandon()
		<-s.done
		err = fmt.Errorf("copy result events not all sent before shutdown: %w", ctx.Err())
	}
	s.abandon()
	s.idle.CloseIdleConnections()
	return err
}
