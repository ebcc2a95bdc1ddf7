// Command image builds the mutator function's container image with ko,
// without Docker (see internal/image). `make image` runs it:
//
//	cd test/knative && go run ./cmd/image -repo ghcr.io/<you>/mutator
//
// -repo ko.local loads the image into the local Docker daemon instead.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/mutator-dev/mutator/test/knative/internal/image"
	"github.com/mutator-dev/mutator/test/knative/internal/repo"
)

func main() {
	repoFlag := flag.String("repo", os.Getenv("KO_DOCKER_REPO"), "repository to push to (KO_DOCKER_REPO); ko.local = the Docker daemon")
	platforms := flag.String("platform", "", "platforms, e.g. linux/amd64,linux/arm64 (default: .ko.yaml's)")
	tags := flag.String("tags", "latest", "comma-separated tags")
	printBase := flag.Bool("print-base", false, "write the base image into the cache and print its digest (for .ko.yaml)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *repoFlag, *platforms, *tags, *printBase); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, repoName, platforms, tags string, printBase bool) error {
	if printBase {
		kocache, err := repo.CacheDir("ko")
		if err != nil {
			return err
		}
		digest, err := image.WriteBase(kocache)
		if err != nil {
			return err
		}
		fmt.Println(digest)
		return nil
	}
	if repoName == "" {
		return fmt.Errorf("no -repo (or KO_DOCKER_REPO): where should the image go?")
	}
	ref, out, err := image.Build(ctx, image.Options{Repo: repoName, Platforms: platforms, Tags: tags})
	fmt.Fprint(os.Stderr, out)
	if err != nil {
		return err
	}
	fmt.Println(ref)
	return nil
}
