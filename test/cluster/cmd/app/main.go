// Command app is the cluster tests' workload: it prints the files named by
// -print (e.g. one from an image volume, so `kubectl logs` shows it was
// readable) and the addresses of the names given by -lookup (resolved
// through the Pod's DNS), then runs until SIGTERM, or until -exit-after has
// passed so that the kubelet restarts it.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	var files []string
	flag.Func("print", "print this file's content (repeatable)", func(path string) error {
		files = append(files, path)
		return nil
	})
	var names []string
	flag.Func("lookup", "print this name's addresses (repeatable)", func(name string) error {
		names = append(names, name)
		return nil
	})
	exitAfter := flag.Duration("exit-after", 0, "exit 0 after this long (0: run until SIGTERM)")
	flag.Parse()

	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "app: %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("app: %s: %s\n", path, strings.TrimSpace(string(data)))
	}
	for _, name := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		addrs, err := net.DefaultResolver.LookupHost(ctx, name)
		cancel()
		if err != nil {
			fmt.Fprintf(os.Stderr, "app: %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("app: lookup %s: %s\n", name, strings.Join(addrs, " "))
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	var timeout <-chan time.Time
	if *exitAfter > 0 {
		timeout = time.After(*exitAfter)
	}
	select {
	case <-sigs:
	case <-timeout:
		fmt.Println("app: exiting as asked")
	}
}
