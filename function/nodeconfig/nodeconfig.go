// Package nodeconfig turns the webhook's image plan into the container
// runtime's own registry configuration, so that images that never meet the
// webhook (static Pods, images pulled before it was installed, namespaces it
// skips) come from the same mirror: containerd's hosts.toml files
// (docs/hosts.md of containerd 2.x, config_path) and the [[registry]] tables
// of CRI-O's containers-registries.conf v2. It is pure: it returns the files'
// contents and never touches a disk.
//
// The runtimes configure registries by host (containerd) or by name prefix
// (CRI-O) and replace that host or prefix with the mirror's, keeping the
// normalised repository path: exactly REGISTRY_MAP's rule, and REGISTRY's
// (the "core" rule) except for the Docker Hub spellings listed in Notes.
// What a runtime cannot express is never guessed at silently: every
// approximation comes back as a note for the operator.
package nodeconfig

import (
	"errors"
	"fmt"
	"net"
	"path"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mutator-dev/mutator/function/images"
)

// Options are the node-side settings the webhook's configuration does not
// hold: how the node reaches the mirrors.
type Options struct {
	// CAFiles are CA certificates (PEM) on the node that sign the mirrors'
	// serving certificates: containerd's "ca" (an absolute path, or one
	// relative to the hosts.toml's directory).
	CAFiles []string
	// SkipVerify turns the mirrors' certificate verification off
	// (containerd's skip_verify, CRI-O's insecure).
	SkipVerify bool
	// PlainHTTP reaches the mirrors over plain HTTP (containerd's http://
	// host, CRI-O's insecure).
	PlainHTTP bool
	// NoFallback makes the mirror the only place an image is pulled from:
	// without it the runtime tries the origin registry when the mirror
	// fails, which keeps a node working through a mirror outage but pulls
	// from where the webhook would not let a Pod pull.
	NoFallback bool
	// Hosts are registry hosts written one by one for the catch-all
	// (REGISTRY, or REGISTRY_MAP's "*"): CRI-O has no catch-all, and in
	// containerd a host's own directory wins over _default.
	Hosts []string
}

// File is one generated file.
type File struct {
	// Path is relative to the runtime's configuration directory, with "/"
	// separators: "docker.io/hosts.toml" under containerd's config_path.
	Path    string
	Content []byte
}

// Result is a runtime's configuration.
type Result struct {
	Files []File
	// Notes say where the node's configuration differs from what the
	// webhook does, and what to do about it; they belong on standard error.
	Notes []string
}

// DefaultHost is containerd's directory for every registry host that has
// none of its own (containerd 1.5+, docs/hosts.md "_default").
const DefaultHost = "_default"

// dockerHub is the canonical Docker Hub host: containerd looks its
// hosts.toml up under this name and pulls from registry-1.docker.io.
const (
	dockerHub       = "docker.io"
	dockerHubServer = "registry-1.docker.io"
)

// route sends one registry host (or, for the catch-all, every other one)
// to a mirror.
type route struct {
	source string // canonical registry host; DefaultHost for the catch-all
	target string // the mirror: registry host with an optional path
	why    string // the setting behind it, for the file's comment
	// catchAll marks _default and the hosts of Options.Hosts: REGISTRY's
	// or "*"'s rule, not a host's own REGISTRY_MAP entry.
	catchAll bool
}

// allowed is a prefix the webhook leaves alone (REGISTRY, an
// IGNORED_REGISTRIES entry, a REGISTRY_MAP target), in canonical form.
type allowed struct {
	prefix string // "registry.k8s.io", "quay.io/private"
	host   string // its registry host
	path   string // the rest; "" for a whole host
	why    string // the setting: "REGISTRY", "IGNORED_REGISTRIES", "REGISTRY_MAP target"
}

// model is the plan in the runtimes' terms.
type model struct {
	plan     images.Plan
	opts     Options
	catchAll *route           // REGISTRY_MAP "*" or REGISTRY; nil without one
	core     bool             // the catch-all is REGISTRY's core rule
	routes   map[string]route // by source host, for REGISTRY_MAP sources and Options.Hosts
	allowed  []allowed
	// whole holds the hosts the webhook leaves alone entirely (an allowed
	// prefix without a path): no route may send them to a mirror.
	whole map[string]string
	// mirrors are the hosts of REGISTRY and the REGISTRY_MAP targets, in
	// the plan's order: images the webhook rewrote are pulled from them
	// as named, with the same TLS settings as the routes.
	mirrors []string
	// notes apply to every runtime.
	notes []string
}

// build checks the options and lays the plan out by host.
func build(plan images.Plan, opts Options) (*model, error) {
	if err := checkOptions(opts); err != nil {
		return nil, err
	}
	m := &model{plan: plan, opts: opts, routes: map[string]route{}, whole: map[string]string{}}
	add := func(prefix, why string) error {
		canonical, err := images.CanonicalPrefix(prefix)
		if err != nil {
			return fmt.Errorf("%s %q: %w", why, prefix, err)
		}
		host, rest, _ := strings.Cut(canonical, "/")
		m.allowed = append(m.allowed, allowed{prefix: canonical, host: host, path: rest, why: why})
		if rest == "" {
			m.whole[host] = why
		}
		return nil
	}
	var errs []error
	if plan.Registry != "" {
		errs = append(errs, add(plan.Registry, "REGISTRY"))
	}
	for _, p := range plan.Ignored {
		errs = append(errs, add(p, "IGNORED_REGISTRIES"))
	}
	for _, r := range plan.Map {
		errs = append(errs, add(r.Target, "REGISTRY_MAP target"))
	}
	if err := errors.Join(errs...); err != nil {
		// ParsePlan validated every value; this is a plan built by hand.
		return nil, fmt.Errorf("image plan: %w", err)
	}
	for _, t := range plan.Targets() {
		host, _, _ := strings.Cut(t, "/")
		if !slices.Contains(m.mirrors, host) {
			m.mirrors = append(m.mirrors, host)
		}
	}

	// The catch-all: REGISTRY_MAP's "*" wins over REGISTRY in the webhook
	// (images.Rewriter.rewrite tries the map first).
	for _, r := range plan.Map {
		if r.Source == "*" {
			m.catchAll = &route{source: DefaultHost, target: r.Target, why: "REGISTRY_MAP " + r.String(), catchAll: true}
		}
	}
	if m.catchAll == nil && plan.Registry != "" {
		m.catchAll = &route{source: DefaultHost, target: plan.Registry, why: "REGISTRY=" + plan.Registry, catchAll: true}
		m.core = true
	}

	// Per-host routes. An allowed prefix without a path wins over a
	// source, as in the webhook, which checks allowed prefixes first.
	for _, r := range plan.Map {
		if r.Source == "*" || m.whole[r.Source] != "" {
			continue
		}
		m.routes[r.Source] = route{source: r.Source, target: r.Target, why: "REGISTRY_MAP " + r.String()}
	}
	for _, h := range opts.Hosts {
		host, err := sourceHost(h)
		if err != nil {
			return nil, err
		}
		if m.catchAll == nil {
			return nil, fmt.Errorf("host %q: there is no catch-all (REGISTRY or a REGISTRY_MAP \"*\" entry) to write it for", h)
		}
		if _, ok := m.routes[host]; ok || m.whole[host] != "" {
			// Its own REGISTRY_MAP entry, or left alone: the webhook
			// does not apply the catch-all to it either.
			continue
		}
		if slices.Contains(m.mirrors, host) {
			// containerd would send the mirror's own images to the
			// mirror again, under a second prefix.
			m.notes = append(m.notes, fmt.Sprintf("--hosts %s: the host of a mirror is pulled from as named, not sent to %s", host, m.catchAll.target))
			continue
		}
		m.routes[host] = route{source: host, target: m.catchAll.target, why: m.catchAll.why + " (the catch-all, for a host named in --hosts)", catchAll: true}
	}
	return m, nil
}

// checkOptions refuses settings no runtime file can carry.
func checkOptions(opts Options) error {
	var errs []error
	for _, f := range opts.CAFiles {
		if f == "" {
			errs = append(errs, errors.New("CA file: empty path"))
			continue
		}
		// The path goes into a TOML string as is.
		if !utf8.ValidString(f) || strings.ContainsFunc(f, unicode.IsControl) {
			errs = append(errs, fmt.Errorf("CA file %q: a path with control characters or invalid UTF-8", f))
		}
	}
	if opts.PlainHTTP && (len(opts.CAFiles) > 0 || opts.SkipVerify) {
		// containerd would try HTTPS first for an http:// host with TLS
		// settings; the combination says two different things.
		errs = append(errs, errors.New("plain HTTP mirrors take no TLS settings (CA files, skip verify)"))
	}
	return errors.Join(errs...)
}

// sourceHost checks a registry host named in Options.Hosts and returns the
// form containerd looks it up under.
func sourceHost(h string) (string, error) {
	h = strings.TrimSpace(h)
	// A REGISTRY_MAP source is exactly a registry host the runtime can
	// name, in containerd's spelling: parsed as one, with a valid target.
	rules, err := images.ParseRegistryMap([]string{h + "=probe.invalid"})
	if err != nil || len(rules) != 1 || rules[0].Source == "*" {
		return "", fmt.Errorf("host %q is not a registry host (such as docker.io, quay.io, host:5000)", h)
	}
	return rules[0].Source, nil
}

// routed reports the route containerd takes for host: its own, the
// catch-all's (_default) when it has no directory of its own, or none.
func (m *model) routed(host string) *route {
	if r, ok := m.routes[host]; ok {
		return &r
	}
	if m.hasOwnDir(host) {
		return nil
	}
	return m.catchAll
}

// hasOwnDir reports whether the containerd layout writes a directory of
// host's own (its route, or a file that pulls it as named), which wins
// over _default.
func (m *model) hasOwnDir(host string) bool {
	if _, ok := m.routes[host]; ok {
		return true
	}
	return m.whole[host] != "" && m.catchAll != nil || slices.Contains(m.mirrors, host)
}

// mirrorURL is the mirror as containerd's host URL: the registry's API
// root, so that containerd appends the repository path to it. A mirror with
// a path needs override_path, since containerd otherwise appends "/v2" after
// the path (https://mirror/path/v2/<repository>) instead of asking
// https://mirror/v2/path/<repository>, the image the webhook names.
func (m *model) mirrorURL(target string) (url string, overridePath bool) {
	host, p, _ := strings.Cut(target, "/")
	scheme := "https"
	if m.opts.PlainHTTP {
		scheme = "http"
	}
	if p == "" {
		return scheme + "://" + host, false
	}
	return scheme + "://" + host + path.Join("/v2", p), true
}

// tlsLines are the TLS settings of a mirror host, as TOML key lines.
func (m *model) tlsLines(indent string) string {
	var b strings.Builder
	if len(m.opts.CAFiles) > 0 {
		quoted := make([]string, len(m.opts.CAFiles))
		for i, f := range m.opts.CAFiles {
			quoted[i] = quote(f)
		}
		fmt.Fprintf(&b, "%sca = [%s]\n", indent, strings.Join(quoted, ", "))
	}
	if m.opts.SkipVerify {
		fmt.Fprintf(&b, "%sskip_verify = true\n", indent)
	}
	return b.String()
}

// Containerd returns containerd's hosts.toml files, one per registry host
// the configuration names (and _default for the catch-all), to put under
// the CRI plugin's registry config_path (containerd 2:
// plugins."io.containerd.cri.v1.images".registry.config_path). containerd
// reads them on every pull: no restart.
func Containerd(plan images.Plan, opts Options) (Result, error) {
	m, err := build(plan, opts)
	if err != nil {
		return Result{}, err
	}
	var res Result
	hosts := map[string]string{}
	for source, r := range m.routes {
		hosts[source] = m.routeTOML(r)
	}
	if m.catchAll != nil {
		hosts[DefaultHost] = m.routeTOML(*m.catchAll)
		// Without a file of their own, the hosts the webhook leaves alone
		// would take _default's mirror.
		for host, why := range m.whole {
			if _, ok := hosts[host]; !ok {
				hosts[host] = m.passTOML(host, why)
			}
		}
	}
	for _, host := range m.mirrors {
		if _, ok := hosts[host]; ok {
			// Its own route (a REGISTRY_MAP source; containerdNotes names
			// the mirror's path under it) or already left alone.
			continue
		}
		// Pods the webhook rewrote name the mirror itself: they need its
		// TLS settings, and _default must not send them elsewhere.
		if m.catchAll != nil || m.tlsLines("") != "" || m.opts.PlainHTTP {
			hosts[host] = m.passTOML(host, "the host of "+m.mirrorOf(host))
		}
	}
	names := make([]string, 0, len(hosts))
	for h := range hosts {
		names = append(names, h)
	}
	slices.SortFunc(names, hostOrder)
	for _, h := range names {
		// "host:port" is the directory containerd 1.5 and later look up
		// on Linux (containerd 2 tries "host_port_" first, then
		// "host:port"); Windows would need "host_port_", not written here.
		res.Files = append(res.Files, File{Path: h + "/hosts.toml", Content: []byte(hosts[h])})
	}
	res.Notes = append(append(res.Notes, m.notes...), m.containerdNotes()...)
	return res, nil
}

// hostOrder sorts _default first, then hosts by name.
func hostOrder(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == DefaultHost:
		return -1
	case b == DefaultHost:
		return 1
	}
	return strings.Compare(a, b)
}

// mirrorOf names the setting that made host a mirror.
func (m *model) mirrorOf(host string) string {
	if h, _, _ := strings.Cut(m.plan.Registry, "/"); h == host {
		return "REGISTRY " + m.plan.Registry
	}
	for _, r := range m.plan.Map {
		if h, _, _ := strings.Cut(r.Target, "/"); h == host {
			return "REGISTRY_MAP target " + r.Target
		}
	}
	return "a mirror"
}

// routeTOML is the hosts.toml of a route.
func (m *model) routeTOML(r route) string {
	var b strings.Builder
	mirror, override := m.mirrorURL(r.target)
	fmt.Fprintf(&b, "# Written by mutator node-config from %s.\n", r.why)
	if r.source == DefaultHost {
		fmt.Fprintf(&b, "# Every registry without a directory of its own: <host>/<repository> is pulled\n# from %s/<repository>, as the webhook rewrites it.\n", r.target)
	} else {
		fmt.Fprintf(&b, "# %s/<repository> is pulled from %s/<repository>, as the webhook rewrites it.\n", r.source, r.target)
	}
	if m.opts.NoFallback {
		b.WriteString("# The mirror is the only server: the origin is never asked (--no-fallback).\n")
		fmt.Fprintf(&b, "server = %s\n", quote(mirror))
		b.WriteString("capabilities = [\"pull\", \"resolve\"]\n")
		if override {
			b.WriteString("override_path = true\n")
		}
		b.WriteString(m.tlsLines(""))
		return b.String()
	}
	switch {
	case r.source == DefaultHost:
		// No server: containerd falls back to the image's own registry,
		// whichever it is (registry-1.docker.io for docker.io).
		b.WriteString("# When the mirror fails, containerd pulls from the image's own registry.\n")
	case isLocal(r.source):
		// containerd's default for a local registry (plain HTTP on a port
		// other than 443, no verification) is kept by leaving server out.
		fmt.Fprintf(&b, "# When the mirror fails, containerd pulls from %s with its defaults.\n", r.source)
	default:
		server := r.source
		if server == dockerHub {
			server = dockerHubServer
		}
		fmt.Fprintf(&b, "# When the mirror fails, containerd pulls from %s.\n", server)
		fmt.Fprintf(&b, "server = %s\n", quote("https://"+server))
	}
	fmt.Fprintf(&b, "\n[host.%s]\n", quote(mirror))
	b.WriteString("  capabilities = [\"pull\", \"resolve\"]\n")
	if override {
		b.WriteString("  override_path = true\n")
	}
	b.WriteString(m.tlsLines("  "))
	return b.String()
}

// passTOML is the hosts.toml of a host pulled from as named: a mirror's
// (with its TLS settings) or a host the webhook leaves alone. Without a
// server line containerd uses its defaults for the host, as if there were
// no file, except that _default no longer applies.
func (m *model) passTOML(host, why string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by mutator node-config: %s, pulled from as named (%s).\n", host, why)
	tls := m.tlsLines("")
	if slices.Contains(m.mirrors, host) && (tls != "" || m.opts.PlainHTTP) {
		scheme := "https"
		if m.opts.PlainHTTP {
			scheme = "http"
		}
		fmt.Fprintf(&b, "server = %s\n", quote(scheme+"://"+host))
		b.WriteString(tls)
		return b.String()
	}
	b.WriteString("# No server: containerd's defaults for this host, and not _default's mirror.\n")
	return b.String()
}

// containerdNotes lists where containerd, which configures whole hosts,
// differs from the webhook.
func (m *model) containerdNotes() []string {
	var notes []string
	for _, a := range m.allowed {
		if a.path == "" {
			continue
		}
		r := m.routed(a.host)
		if r == nil {
			continue
		}
		then := fmt.Sprintf(", then from %s when the mirror fails", a.host)
		if m.opts.NoFallback {
			then = " only"
		}
		notes = append(notes, fmt.Sprintf("containerd configures whole registry hosts: images under %s (%s), which the webhook leaves alone, are pulled from %s%s",
			a.prefix, a.why, r.target, then))
	}
	if r := m.routed(dockerHub); m.core && r != nil && r.catchAll {
		notes = append(notes, dockerCoreNote(m.plan.Registry, "containerd"))
	}
	slices.Sort(notes)
	return notes
}

// dockerCoreNote explains the one place REGISTRY's rule and a runtime's
// mirror disagree: the runtime keeps Docker Hub's normalised path
// ("library/nginx"), the core rule the path as written.
func dockerCoreNote(registry, runtime string) string {
	return fmt.Sprintf("Docker Hub official images written without \"library/\" (\"nginx\", \"docker.io/nginx\") are rewritten by the webhook to %[1]s/nginx but asked of the mirror by %[2]s as %[1]s/library/nginx: "+
		"keep both paths on the mirror, or set REGISTRY_MAP docker.io=%[1]s, whose rule keeps \"library/\" as %[2]s does", registry, runtime)
}

// isLocal mirrors containerd's docker.IsLocalhost: localhost and loopback
// addresses, with or without a port.
func isLocal(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}

// quote writes s as a TOML basic string. checkOptions and the image plan's
// validation keep control characters out, so only '"' and '\' need escapes.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
