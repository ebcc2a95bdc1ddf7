package nodeconfig

import (
	"fmt"
	"slices"
	"strings"

	"github.com/mutator-dev/mutator/function/images"
)

// CRIOFile is where the CRI-O configuration belongs: a drop-in of
// containers-registries.conf.d(5), read after /etc/containers/registries.conf,
// so the distribution's file stays as it is.
const CRIOFile = "/etc/containers/registries.conf.d/50-mutator.conf"

// crioEntry is one [[registry]] table.
type crioEntry struct {
	prefix   string
	location string
	mirror   string // "" for none
	insecure bool   // of the mirror when there is one, else of location
	why      string
}

// CRIO returns the [[registry]] tables of containers-registries.conf v2
// (CRI-O, Podman and every containers/image user) as one file for CRIOFile.
// CRI-O picks the table with the longest prefix matching the image name and
// replaces that prefix with the mirror's location, so REGISTRY_MAP sources
// and the IGNORED_REGISTRIES paths under them are exact. There is no
// catch-all: REGISTRY and REGISTRY_MAP "*" reach only the hosts of
// Options.Hosts. CRI-O reads the file when it starts and on SIGHUP.
func CRIO(plan images.Plan, opts Options) (Result, error) {
	m, err := build(plan, opts)
	if err != nil {
		return Result{}, err
	}
	insecure := opts.SkipVerify || opts.PlainHTTP
	byPrefix := map[string]crioEntry{}
	for source, r := range m.routes {
		e := crioEntry{prefix: source, location: source, mirror: r.target, insecure: insecure, why: r.why}
		if opts.NoFallback {
			// A location replaces the origin: it is the only place tried.
			e.location, e.mirror = r.target, ""
		}
		byPrefix[source] = e
	}
	// Longer prefixes win, so a path the webhook leaves alone under a
	// mirrored host gets a table of its own that pulls it as named.
	for _, a := range m.allowed {
		if _, ok := byPrefix[a.prefix]; ok || a.path == "" {
			continue
		}
		if _, ok := m.routes[a.host]; !ok {
			continue
		}
		byPrefix[a.prefix] = crioEntry{prefix: a.prefix, location: a.prefix, why: a.why + " " + a.prefix + ": pulled from as named, as the webhook leaves it",
			insecure: insecure && a.why != "IGNORED_REGISTRIES"}
	}
	// Images the webhook rewrote name the mirror: they need its TLS
	// setting too.
	if insecure {
		for _, t := range plan.Targets() {
			p, err := images.CanonicalPrefix(t)
			if err != nil {
				return Result{}, fmt.Errorf("image plan: target %q: %w", t, err)
			}
			if _, ok := byPrefix[p]; !ok {
				byPrefix[p] = crioEntry{prefix: p, location: p, insecure: true, why: "the mirror " + t + ", pulled from as named"}
			}
		}
	}
	prefixes := make([]string, 0, len(byPrefix))
	for p := range byPrefix {
		prefixes = append(prefixes, p)
	}
	slices.Sort(prefixes)

	var b strings.Builder
	fmt.Fprintf(&b, "# Written by mutator node-config for %s (containers-registries.conf.d(5)).\n", CRIOFile)
	b.WriteString("# The [[registry]] table with the longest matching prefix applies to an image.\n")
	if len(prefixes) == 0 {
		b.WriteString("# Nothing to configure: no registry is sent to a mirror.\n")
	}
	for _, p := range prefixes {
		e := byPrefix[p]
		fmt.Fprintf(&b, "\n# %s\n[[registry]]\nprefix = %s\nlocation = %s\n", e.why, quote(e.prefix), quote(e.location))
		if e.mirror == "" {
			if e.insecure {
				b.WriteString("insecure = true\n")
			}
			continue
		}
		fmt.Fprintf(&b, "\n[[registry.mirror]]\nlocation = %s\n", quote(e.mirror))
		if e.insecure {
			b.WriteString("insecure = true\n")
		}
	}

	res := Result{Files: []File{{Path: CRIOFile, Content: []byte(b.String())}}, Notes: m.notes}
	if m.catchAll != nil {
		var named []string
		for _, r := range m.routes {
			if r.catchAll {
				named = append(named, r.source)
			}
		}
		slices.Sort(named)
		list := "none"
		if len(named) > 0 {
			list = strings.Join(named, ", ")
		}
		res.Notes = append(res.Notes, fmt.Sprintf("CRI-O has no catch-all: %s applies on the node only to the hosts given with --hosts (%s); images from other registries are pulled from where they name",
			m.catchAll.why, list))
	}
	if r, ok := m.routes[dockerHub]; ok && m.core && r.catchAll {
		res.Notes = append(res.Notes, dockerCoreNote(plan.Registry, "CRI-O"))
	}
	if len(opts.CAFiles) > 0 {
		// registries.conf has no CA setting; containers/image reads
		// certs.d (containers-certs.d(5)).
		for _, h := range m.mirrors {
			res.Notes = append(res.Notes, fmt.Sprintf("CRI-O takes CA certificates from a directory, not from registries.conf: copy %s to /etc/containers/certs.d/%s/ (files ending in .crt)",
				strings.Join(opts.CAFiles, ", "), h))
		}
	}
	if opts.SkipVerify {
		res.Notes = append(res.Notes, "CRI-O's insecure = true, written for --skip-verify, also allows plain HTTP to the mirrors")
	}
	return res, nil
}
