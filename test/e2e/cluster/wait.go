package cluster

import (
	"context"
	"fmt"
	"time"
)

// WaitFor calls cond immediately and then every interval until it reports
// done, returns an error, or ctx ends. Conditions should report transient
// failures (connection refused while a server starts) as (false, nil) and
// return an error only for failures that waiting cannot fix.
func WaitFor(ctx context.Context, interval time.Duration, cond func(context.Context) (bool, error)) error {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		done, err := cond(ctx)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("condition not met: %w", context.Cause(ctx))
		case <-ticker.C:
		}
	}
}
