// Command app is the cluster tests' workload: it prints the files named by
// -print (e.g. one from an image volume, so `kubectl logs` shows it was
// readable) and the addresses of the names given by -lookup (resolved
// through the Pod's DNS), then runs until SIGTERM, or until -exit-after has
// passed so that the kubelet restarts it. With $PORT set (as Knative Serving
// sets it), it also answers every HTTP request on that port with its
// image's /etc/image (image name and run nonce), so a caller can tell which
// image answered.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
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

	if port := os.Getenv("PORT"); port != "" {
		go serve(port)
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

// serve answers every request with /etc/image; it exits the program if it
// cannot listen, so that a broken Pod shows as a crash, not as a timeout.
func serve(port string) {
	srv := &http.Server{
		Addr:              ":" + port,
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			data, err := os.ReadFile("/etc/image")
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			_, _ = w.Write(data)
		}),
	}
	err := srv.ListenAndServe()
	fmt.Fprintf(os.Stderr, "app: serving on port %s: %v\n", port, err)
	os.Exit(1)
}
