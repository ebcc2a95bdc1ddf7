// Package syncbuf is a bytes.Buffer safe for one writer and concurrent
// readers: the tests give it to os/exec as a process's output, whose copying
// goroutine writes while the test reads.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer collects a process's output while a test reads it.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
