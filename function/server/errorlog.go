package server

import (
	"log"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// newErrorLog returns the log.Logger net/http writes its own errors to,
// writing them to logger at warn level, at most errorLogPerSecond a second
// (bursts of errorLogBurst); what is dropped is counted and reported once a
// minute at most.
func newErrorLog(logger *zap.Logger) *log.Logger {
	return log.New(&errorWriter{
		logger:  logger,
		limiter: rate.NewLimiter(errorLogPerSecond, errorLogBurst),
	}, "", 0)
}

type errorWriter struct {
	logger  *zap.Logger
	limiter *rate.Limiter

	mu         sync.Mutex
	suppressed int
	lastReport time.Time
}

func (w *errorWriter) Write(p []byte) (int, error) {
	if !w.limiter.Allow() {
		w.mu.Lock()
		w.suppressed++
		w.mu.Unlock()
		return len(p), nil
	}
	w.mu.Lock()
	suppressed := 0
	if w.suppressed > 0 && time.Since(w.lastReport) >= errorLogSuppressedEvery {
		suppressed, w.suppressed, w.lastReport = w.suppressed, 0, time.Now()
	}
	w.mu.Unlock()
	fields := []zap.Field{zap.String("source", "net/http")}
	if suppressed > 0 {
		fields = append(fields, zap.Int("suppressedSinceLastReport", suppressed))
	}
	w.logger.Warn(strings.TrimSpace(string(p)), fields...)
	return len(p), nil
}
