package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/nodeconfig"
)

const nodeConfigUsage = `usage: mutator node-config [flags]

Prints, for the configuration in env (REGISTRY, REGISTRY_MAP, IGNORED_REGISTRIES),
the container runtime's registry configuration that sends the same images to the
same mirrors on the node itself, for the images that never meet the webhook (static
Pods, images pulled before it was installed, namespaces it skips):

  --format containerd   containerd's hosts.toml files, one per registry host (and
                        _default for REGISTRY or REGISTRY_MAP "*"), for the CRI
                        plugin's registry config_path (default)
  --format crio         [[registry]] tables of containers-registries.conf, for
                        ` + nodeconfig.CRIOFile + `
  --containerd-dir DIR  write the hosts.toml files to DIR/<host>/hosts.toml
                        instead of printing them (containerd reads them on the
                        next pull: no restart)

Where the node cannot do exactly what the webhook does, a note on standard error
says so. See docs/node-config.md.

Flags:
`

// nodeConfigCmd is `mutator node-config`.
func nodeConfigCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("node-config", nodeConfigUsage, stderr)
	format := fs.String("format", "containerd", "what to print: containerd (hosts.toml files) or crio (registries.conf)")
	dir := fs.String("containerd-dir", "", "write containerd's hosts.toml files under `DIR` (its config_path) instead of printing them")
	var opts nodeconfig.Options
	fs.Func("ca-file", "CA certificate (PEM) on the node that signs the mirrors' certificates; repeat for several (containerd's ca)", func(s string) error {
		opts.CAFiles = append(opts.CAFiles, s)
		return nil
	})
	fs.BoolVar(&opts.SkipVerify, "skip-verify", false, "do not verify the mirrors' certificates (containerd's skip_verify, CRI-O's insecure)")
	fs.BoolVar(&opts.PlainHTTP, "plain-http", false, "reach the mirrors over plain HTTP")
	fs.BoolVar(&opts.NoFallback, "no-fallback", false, "never pull from the origin registry, even when the mirror fails (the webhook never lets a Pod pull from it)")
	hosts := fs.String("hosts", "", "comma-separated registry hosts to write the catch-all (REGISTRY or REGISTRY_MAP \"*\") for one by one; CRI-O has no catch-all otherwise")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	formatSet := false
	fs.Visit(func(f *flag.Flag) { formatSet = formatSet || f.Name == "format" })
	switch {
	case *format != "containerd" && *format != "crio":
		fmt.Fprintf(stderr, "mutator node-config: --format %q is not one of containerd, crio\n", *format)
		return 2
	case *dir != "" && formatSet && *format != "containerd":
		fmt.Fprintln(stderr, "mutator node-config: --containerd-dir writes containerd's files; --format crio prints CRI-O's")
		return 2
	}
	opts.Hosts = commaList(*hosts)

	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintln(stderr, "mutator:", err)
		return 1
	}
	plan := cfg.Rules.Images
	if !plan.Enabled() {
		fmt.Fprintln(stderr, "mutator node-config: nothing to configure: REGISTRY and REGISTRY_MAP are empty, so the webhook sends no image to a mirror")
		return 1
	}
	generate := nodeconfig.Containerd
	if *format == "crio" {
		generate = nodeconfig.CRIO
	}
	res, err := generate(plan, opts)
	if err != nil {
		fmt.Fprintln(stderr, "mutator node-config:", err)
		return 1
	}
	// Notes first: a reader of the terminal sees them before the files.
	for _, n := range res.Notes {
		fmt.Fprintln(stderr, "mutator node-config: note:", n)
	}
	if *dir != "" {
		for _, f := range res.Files {
			path, err := writeHostsFile(*dir, f)
			if err != nil {
				fmt.Fprintln(stderr, "mutator node-config:", err)
				return 1
			}
			fmt.Fprintln(stdout, "wrote", path)
		}
		return 0
	}
	if err := printFiles(stdout, *format, res.Files); err != nil {
		fmt.Fprintln(stderr, "mutator node-config: writing:", err)
		return 1
	}
	return 0
}

// printFiles prints containerd's files each under a comment naming its
// path, and CRI-O's one file as it is.
func printFiles(w io.Writer, format string, files []nodeconfig.File) error {
	var b strings.Builder
	for i, f := range files {
		if format == "containerd" {
			if i > 0 {
				b.WriteByte('\n')
			}
			fmt.Fprintf(&b, "# ==> <config_path>/%s <==\n", f.Path)
		}
		b.Write(f.Content)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeHostsFile writes f under dir, replacing the file at once: containerd
// reads hosts.toml on every pull, and a half-written one would fail to
// decode, which containerd logs and then treats as no configuration (the
// origin, without the mirror).
func writeHostsFile(dir string, f nodeconfig.File) (string, error) {
	rel := filepath.FromSlash(f.Path)
	if !filepath.IsLocal(rel) {
		// Hosts come from validated settings; checked anyway, since
		// this writes as whoever runs it (root on a node).
		return "", fmt.Errorf("refusing to write %q outside %s", f.Path, dir)
	}
	path := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("creating the directory of %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".hosts.toml-*")
	if err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	_, werr := tmp.Write(f.Content)
	cerr := tmp.Close()
	err = errors.Join(werr, cerr)
	if err == nil {
		// CreateTemp makes the file 0600; containerd runs as root, but
		// the configuration is not secret and is read by people too.
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return path, nil
}
