package policy

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/distribution/reference"

	"github.com/mutator-dev/mutator/function/images"
)

// This file ports the webhook's image decision (images.Rewriter.Rewrite) to
// CEL, step by step, so that the API server reaches the same answer for
// every string without a webhook. Each step names the Go code it mirrors;
// the unit tests evaluate the result against images.Rewriter on the fuzz
// corpora and the e2e parity test on a real kube-apiserver.
//
// Kubernetes' CEL environment has no cel.bind, so a value used more than
// once is bound with a one-element comprehension: [value].map(name, body)[0].
// Its environment also requires homogeneous list and map literals, so the
// parser returns a list of strings, not a record.

// let binds name to value in body.
func let(name, value, body string) string {
	return "[" + value + "].map(" + name + ", " + body + ")[0]"
}

// lit is a CEL string literal for s. Go's quoting is a subset of CEL's
// escape syntax (\a \b \f \n \r \t \v \\ \" \xHH \uHHHH \UHHHHHHHH).
func lit(s string) string { return strconv.Quote(s) }

// raw is a CEL raw string literal for a regular expression, so that its
// backslashes reach RE2 unchanged.
func raw(re string) string {
	if strings.ContainsAny(re, "\"\n") {
		// Never true of the patterns below; a raw literal cannot hold them.
		panic(fmt.Sprintf("policy: pattern %q cannot be a raw CEL string", re))
	}
	return `r"` + re + `"`
}

// litList is a CEL list literal of strings.
func litList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = lit(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// The grammar of github.com/distribution/reference in pieces: RE2
// compiles a counted repetition such as {0,127} or {64} by unrolling it,
// so the library's ReferenceRegexp is slow to compile and to run, while
// these pieces, with the bounds checked by length, are not. cel-go compiles
// a constant pattern once, when the API server builds the program
// (interpreter.CompileRegexConstants, which the API server's
// cel.OptOptimize turns on alongside cost tracking; this package's tests
// measures it in the API server's own environment), so what each
// evaluation pays is the match. The unit tests check that the pieces
// reassemble into reference.ReferenceRegexp.
var (
	// domainPattern is DomainRegexp (host with optional port), anchored:
	// a name's first component is its domain when it matches.
	domainPattern = "^(?:" + reference.DomainRegexp.String() + ")$"
)

const (
	// pathComponent is one component of a repository path.
	pathComponent = `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
	// remoteNamePattern is a repository path, anchored.
	remoteNamePattern = `^` + pathComponent + `(?:/` + pathComponent + `)*$`
	// pathComponentPattern is a single component, anchored.
	pathComponentPattern = `^` + pathComponent + `$`
	// tagPattern is the tag grammar [\w][\w.-]{0,127} without its bound,
	// which maxTagLength checks.
	tagPattern   = `^\w[\w.-]*$`
	maxTagLength = 128
	// hexPattern is lower-case hex: with a length check, the image ID test
	// at the start of ParseNormalizedNamed ([a-f0-9]{64}) and the encoded
	// part of a digest.
	hexPattern = `^[a-f0-9]+$`
)

// digestExpr is what digest.Parse accepts for the digest expression dg
// once the reference grammar holds: an algorithm the webhook binary links
// (sha256, sha384, sha512 from crypto/sha256 and crypto/sha512) with
// exactly its length of lower-case hex digits. It implies the reference
// grammar's digest pattern.
func digestExpr(dg string) string {
	return "((" + dg + ".startsWith('sha256:') && size(" + dg + ") == 71) || (" + dg + ".startsWith('sha384:') && size(" + dg + ") == 103) || (" +
		dg + ".startsWith('sha512:') && size(" + dg + ") == 135)) && " + dg + ".substring(7).matches(" + raw(hexPattern) + ")"
}

// parseExpr is reference.ParseNormalizedNamed applied to the string
// expression x: [] when x does not parse, else [domain, path, tag, digest]
// (reference.Domain, reference.Path, the tag or "", the digest or ""), and
// the domain's images.CanonicalDomain.
func parseExpr(x string) string {
	// splitDockerDomain: the first component is a registry host when it is
	// "localhost", has a '.' or a ':', or has an upper-case letter
	// (lowerAscii suffices: a string with any non-ASCII character fails the
	// grammar below whichever branch it takes); index.docker.io is
	// docker.io; a docker.io path of one component is under library/.
	split := x + ".indexOf('/') < 0 ? ['docker.io', 'library/' + " + x + "] : " +
		let("m", "["+x+".substring(0, "+x+".indexOf('/')), "+x+".substring("+x+".indexOf('/') + 1)]",
			"m[0] == 'index.docker.io' ? ['docker.io', m[1].contains('/') ? m[1] : 'library/' + m[1]] : "+
				"(m[0] == 'localhost' || m[0].contains('.') || m[0].contains(':') || m[0].lowerAscii() != m[0]) ? "+
				"(m[0] == 'docker.io' && !m[1].contains('/') ? ['docker.io', 'library/' + m[1]] : m) : "+
				"['docker.io', "+x+"]")
	// The grammar name(:tag)?(@digest)? on full, taken apart: name and tag
	// have no '@' and a digest none, so the digest follows the first '@';
	// a ':' after the last '/' starts the tag (a port's ':' is always
	// followed by a '/'). The name's first component is its domain when it
	// is a host (anchoredNameRegexp prefers the optional domain group),
	// else the whole name is the path of an empty domain, which takes a
	// first component that is a path component.
	grammar := let("left", "full.indexOf('@') < 0 ? full : full.substring(0, full.indexOf('@'))",
		let("dg", "full.indexOf('@') < 0 ? '' : full.substring(full.indexOf('@') + 1)",
			"full.indexOf('@') >= 0 && !("+digestExpr("dg")+") ? [] : "+
				let("lc", "left.lastIndexOf(':') > left.lastIndexOf('/') ? left.lastIndexOf(':') : -1",
					let("tag", "lc < 0 ? '' : left.substring(lc + 1)",
						"lc >= 0 && !(size(tag) <= "+strconv.Itoa(maxTagLength)+" && tag.matches("+raw(tagPattern)+")) ? [] : "+
							let("name", "lc < 0 ? left : left.substring(0, lc)",
								let("fc", "name.substring(0, name.indexOf('/'))",
									let("rest", "name.substring(name.indexOf('/') + 1)",
										"!rest.matches("+raw(remoteNamePattern)+") ? [] : "+
											let("dp", "fc.matches("+raw(domainPattern)+") ? [fc, rest] : fc.matches("+raw(pathComponentPattern)+") ? ['', name] : []",
												// Parse: the path is at most 255 characters
												// (ASCII, so size counts bytes).
												"size(dp) == 0 || size(dp[1]) > "+strconv.Itoa(reference.RepositoryNameTotalLengthMax)+" ? [] : "+
													"[dp[0], dp[1], tag, dg, "+canonicalDomainExpr("dp[0]")+"]"))))))))
	// The repository part before any ':' must be lower case.
	rem := "(sp[1].indexOf(':') < 0 ? sp[1] : sp[1].substring(0, sp[1].indexOf(':')))"
	return "size(" + x + ") == 64 && " + x + ".matches(" + raw(hexPattern) + ") ? [] : " +
		let("sp", split,
			rem+".lowerAscii() != "+rem+" ? [] : "+let("full", "sp[0] + '/' + sp[1]", grammar))
}

// canonicalDomainExpr is images.CanonicalDomain of the domain expression d:
// lower case, no explicit :443, index.docker.io as docker.io. A parsed
// domain is ASCII, so lowerAscii is strings.ToLower.
func canonicalDomainExpr(d string) string {
	l := d + ".lowerAscii()"
	return "(" + l + " == 'index.docker.io' || " + l + " == 'index.docker.io:443' ? 'docker.io' : " +
		l + ".endsWith(':443') ? " + l + ".substring(0, size(" + d + ") - 4) : " + l + ")"
}

// rules is the image configuration in the form the expressions need.
type rules struct {
	registry string            // REGISTRY, "" when unset
	bySource map[string]string // REGISTRY_MAP canonical source -> target
	fallback string            // REGISTRY_MAP "*" target
	allowed  []string          // canonical prefixes images may stay under
}

func (r rules) enabled() bool { return r.registry != "" || r.fallback != "" || len(r.bySource) > 0 }

// allowedExpr is images.Rewriter.Allowed for the canonical name expression
// n, evaluated once per prefix: equal to an allowed prefix or below it at a
// component boundary. allowed is the expression of the prefix list.
func allowedExpr(allowed, n string) string {
	return allowed + ".exists(a, " + n + " == a || " + n + ".startsWith(a + '/'))"
}

// Constant names: the configuration's literals, which the policies bind
// once as variables so that the expressions name them (the API server's
// cel.OptOptimize builds a constant literal once per program anyway).
const (
	constAllowed = "allowedPrefixes"
	constTargets = "targets"
	constMap     = "registryMap"
)

// constants returns the literals rewriteExpr refers to, by name, in the
// order they are declared.
func (r rules) constants() ([][2]string, error) {
	info := make([]string, 0, len(r.targets()))
	for _, t := range r.targets() {
		ti, err := targetInfo(t)
		if err != nil {
			return nil, err
		}
		info = append(info, lit(t)+": "+litList(ti))
	}
	out := [][2]string{{constAllowed, litList(r.allowed)}, {constTargets, "{" + strings.Join(info, ", ") + "}"}}
	if len(r.bySource) > 0 {
		keys := make([]string, 0, len(r.bySource))
		for k := range r.bySource {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		entries := make([]string, len(keys))
		for i, k := range keys {
			entries[i] = lit(k) + ": " + lit(r.bySource[k])
		}
		out = append(out, [2]string{constMap, "{" + strings.Join(entries, ", ") + "}"})
	}
	return out, nil
}

// targets returns REGISTRY and the map targets.
func (r rules) targets() []string {
	var out []string
	if r.registry != "" {
		out = append(out, r.registry)
	}
	if r.fallback != "" {
		out = append(out, r.fallback)
	}
	for _, t := range r.bySource {
		out = append(out, t)
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// targetInfo describes how the parser reads a rewrite under target T, T +
// "/" + S, where S is a repository path P with the tag and digest of a
// parsed image: [canonical domain, path prefix, "y" when P alone is
// Docker Hub's library/P]. It is what ParseNormalizedNamed makes of T
// itself (T + "/x/x", as images.CanonicalPrefix does).
//
// The webhook parses every rewrite again; the policy need not, which
// halves its cost. T is a validated registry (images.ValidateRegistry: a
// host, then lower-case path components) and S is made of parts of a
// reference that parsed, so the rewrite's domain and path prefix are T's,
// its path is prefix/P (library/P when T is a bare docker.io or
// index.docker.io and P has one component), and it parses exactly when
// that path has at most 255 characters. The unit tests compare both
// against images.Rewriter.
func targetInfo(target string) ([]string, error) {
	const probe = "/x/x"
	named, err := reference.ParseNormalizedNamed(target + probe)
	if err != nil {
		return nil, fmt.Errorf("registry %q: %w", target, err)
	}
	host, _, _ := strings.Cut(target, "/")
	hub := ""
	if !strings.Contains(target, "/") && (host == "docker.io" || host == "index.docker.io") {
		hub = "y"
	}
	// The path is "x/x" or the prefix and "/x/x".
	prefix := strings.TrimSuffix(strings.TrimSuffix(reference.Path(named), probe[1:]), "/")
	return []string{images.CanonicalDomain(reference.Domain(named)), prefix, hub}, nil
}

// rewriteExpr is images.Rewriter.Rewrite of the string expression x:
// [image to pull] ([x] when it stays), or [] when the webhook refuses it
// (a *images.RefusedError). ref returns the expression of a constant.
func (r rules) rewriteExpr(x string, ref func(name string) string) string {
	allowed := ref(constAllowed)
	// mapped: the target of the image's registry, else the "*" target.
	target := lit(r.fallback)
	if len(r.bySource) > 0 {
		m := ref(constMap)
		target = "(p[4] in " + m + " ? " + m + "[p[4]] : " + lit(r.fallback) + ")"
	}
	tagDigest := "(p[2] != '' ? ':' + p[2] : '') + (p[3] != '' ? '@' + p[3] : '')"
	// [T, S]: under a map target the normalised path, tag and digest;
	// else the core rule: a first component that is the parsed domain (or
	// index.docker.io) is replaced with REGISTRY, else REGISTRY is
	// prepended; tag and digest stay as written. ['', ''] when neither
	// applies (a REGISTRY_MAP without "*" and no REGISTRY).
	core := "['', '']"
	if r.registry != "" {
		first := x + ".substring(0, " + x + ".indexOf('/'))"
		core = "[" + lit(r.registry) + ", " + x + ".indexOf('/') >= 0 && (" + first + " == p[0] || " + first + " == 'index.docker.io') ? " +
			x + ".substring(" + x + ".indexOf('/') + 1) : " + x + "]"
	}
	ts := target + " != '' ? [" + target + ", p[1] + " + tagDigest + "] : " + core
	// The rewrite's path (see targetInfo): T's path prefix and P, which is
	// S without tag and digest; at most 255 characters.
	ti := ref(constTargets) + "[ts[0]]"
	check := let("pp", "ts[1].substring(0, size(ts[1]) - (p[2] != '' ? size(p[2]) + 1 : 0) - (p[3] != '' ? size(p[3]) + 1 : 0))",
		let("po", "("+ti+"[1] != '' ? "+ti+"[1] + '/' : ("+ti+"[2] != '' && !pp.contains('/') ? 'library/' : '')) + pp",
			"size(po) <= "+strconv.Itoa(reference.RepositoryNameTotalLengthMax)+" && "+allowedExpr(allowed, "("+ti+"[0] + '/' + po)")+
				" ? [ts[0] + '/' + ts[1]] : []"))
	return x + " == '' ? [" + x + "] : " +
		// Longer than any pullable reference: refused unparsed. bytes()
		// counts what len() counts in Go.
		"size(bytes(" + x + ")) > " + strconv.Itoa(images.MaxReferenceLength) + " ? [] : " +
		let("p", parseExpr(x),
			"size(p) == 0 || "+allowedExpr(allowed, "(p[4] + '/' + p[1])")+" ? ["+x+"] : "+
				let("ts", ts, "ts[0] == '' ? ["+x+"] : "+check))
}

// literalPrefixes returns, for the allowed prefixes whose spelling a
// string can start with and still be read under them, that spelling and
// a '/': the strings of the cheap path (cheapExpr). A prefix qualifies
// when its first component is a registry host as the parser reads it (a
// '.', a ':' or "localhost", and the domain grammar) written in its
// canonical form (lower case, no :443, not index.docker.io), so that a
// reference spelled under it has that host as its domain and a path
// under the prefix's path. Prefixes are canonical, so a Docker Hub
// namespace qualifies in its canonical spelling (IGNORED_REGISTRIES=myorg
// allows "docker.io/myorg/..." on the cheap path; "myorg/x" itself is left
// to the parser), and a host the parser does not take for one ("a_b.com")
// does not qualify.
func (r rules) literalPrefixes() []string {
	domain := regexp.MustCompile(domainPattern)
	var out []string
	for _, p := range r.allowed {
		host, _, _ := strings.Cut(p, "/")
		if !strings.ContainsAny(host, ".:") && host != "localhost" || !domain.MatchString(host) ||
			host != images.CanonicalDomain(host) || host == "index.docker.io" {
			continue
		}
		// The parser must read a name under it as under it; checked, not
		// assumed, for any prefix images.CanonicalPrefix ever returns.
		named, err := reference.ParseNormalizedNamed(p + "/x/y")
		if err != nil || images.CanonicalDomain(reference.Domain(named))+"/"+reference.Path(named) != p+"/x/y" {
			continue
		}
		out = append(out, p+"/")
	}
	// A prefix under another one adds nothing ("registry.example.com/"
	// covers "registry.example.com/mirror/").
	slices.Sort(out)
	var kept []string
	for _, p := range out {
		if len(kept) == 0 || !strings.HasPrefix(p, kept[len(kept)-1]) {
			kept = append(kept, p)
		}
	}
	return kept
}

// cheapExpr is a sound under-approximation of "the webhook leaves the
// string expression x as it is", decided without the parser: x is
// spelled literally under an allowed prefix (literalPrefixes) and no
// longer than any pullable reference. If such an x parses, its domain is
// the prefix's host, already canonical, and its path continues the
// prefix's path after a '/' (a tag's ':' and a digest's '@' come after
// that '/'), so images.Rewriter.Allowed holds and the webhook keeps it; if
// it does not parse, the webhook keeps it too. the tests in this package check the
// implication on the fuzz corpora and generated strings under each
// prefix. "false" when no allowed prefix qualifies.
func cheapExpr(prefixes []string, x string) string {
	if len(prefixes) == 0 {
		return "false"
	}
	alts := make([]string, len(prefixes))
	for i, p := range prefixes {
		alts[i] = x + ".startsWith(" + lit(p) + ")"
	}
	return "(size(bytes(" + x + ")) <= " + strconv.Itoa(images.MaxReferenceLength) + " && (" + strings.Join(alts, " || ") + "))"
}

// The fast path's grammar: the reference grammar's common shapes, lower
// case, no port, and a sha256 digest if any.
const (
	// hubComponent is a path component without a '.', which
	// splitDockerDomain never takes for a registry host.
	hubComponent = `[a-z0-9]+(?:(?:_|__|[-]+)[a-z0-9]+)*`
	// fastHost is a registry host with a '.' and no port: DNS labels of
	// lower-case letters, digits and inner hyphens, as the domain grammar
	// has them.
	fastHost = `[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+`
	// fastTail is the rest of a name, a tag and a digest.
	fastTail = `(?:/` + pathComponent + `)*(?::\w[\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$`
	// hubPattern: a Docker Hub name (first component no host), with
	// tag and digest.
	hubPattern = `^` + hubComponent + fastTail
	// hostPattern: a name on a registry host, with tag and digest.
	hostPattern = `^` + fastHost + `/` + pathComponent + fastTail
)

// fastExpr is the fast path: for the string expression x, an
// expression of [x's rewrite] where it applies, and of [] where it does
// not (then the full port decides). It applies to references the webhook
// certainly rewrites, and whose rewrite is simple to write, so that the
// common image costs a regular expression match and a concatenation
// instead of the parser:
//
//   - a Docker Hub name (hubPattern: the first component has no '.' or
//     ':' and is not "localhost" followed by a '/', so the parser reads
//     docker.io/[library/]x; not 64 characters, which could be an image
//     ID), when no allowed prefix is on docker.io and docker.io is not
//     mapped: REGISTRY/x;
//   - a name on a host (hostPattern: lower case, a '.', no port, so it is
//     its own canonical domain) that no allowed prefix and no map source
//     names, and that is not docker.io or index.docker.io: REGISTRY/ and
//     x after the host;
//
// only with REGISTRY set and no "*" in REGISTRY_MAP (so the core rule
// applies), and x no longer than maxFast, which keeps the rewrite's path
// within 255 characters whatever the target's path prefix (with Docker
// Hub's "library/"). Such an x parses (its grammar is a subset of the
// reference grammar, with the digest digest.Parse accepts), is not
// allowed (its canonical name is under none of the allowed prefixes) and
// the core rule rewrites it to that string: the tests in this package check it
// against images.Rewriter with everything else.
func (r rules) fastExpr(x string) string {
	if r.registry == "" || r.fallback != "" {
		return "[]"
	}
	ti, err := targetInfo(r.registry)
	if err != nil {
		return "[]"
	}
	maxFast := reference.RepositoryNameTotalLengthMax - len(ti[1]) - len("/") - len("library/")
	// Hosts a fast name must not be on: those of the allowed prefixes
	// and map sources (their names may be allowed or mapped), and Docker
	// Hub's, which the parser treats apart.
	hosts := []string{"docker.io", "index.docker.io"}
	hub := true
	for _, a := range r.allowed {
		host, _, _ := strings.Cut(a, "/")
		hosts = append(hosts, host)
		if host == "docker.io" {
			hub = false
		}
	}
	for src := range r.bySource {
		hosts = append(hosts, src)
		if src == "docker.io" {
			hub = false
		}
	}
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	first := x + ".substring(0, " + x + ".indexOf('/'))"
	host := x + ".matches(" + raw(hostPattern) + ") && !(" + first + " in " + litList(hosts) + ") ? " +
		"[" + lit(r.registry+"/") + " + " + x + ".substring(" + x + ".indexOf('/') + 1)] : []"
	if hub {
		host = x + ".matches(" + raw(hubPattern) + ") && size(" + x + ") != 64 && !" + x + ".startsWith('localhost/') ? " +
			"[" + lit(r.registry+"/") + " + " + x + "] : " + host
	}
	return "size(" + x + ") <= " + strconv.Itoa(maxFast) + " ? (" + host + ") : []"
}

// imageExpr is what the policies evaluate for the string expression x:
// the cheap path, else the fast path, else the port of
// images.Rewriter.Rewrite (rewriteExpr): [image to pull] ([x] when it
// stays) or [] when the webhook refuses it.
func (r rules) imageExpr(x string, ref func(name string) string) string {
	return cheapExpr(r.literalPrefixes(), x) + " ? [" + x + "] : " + r.decideExpr(x, ref)
}

// decideExpr is imageExpr without the cheap path.
func (r rules) decideExpr(x string, ref func(name string) string) string {
	fast := r.fastExpr(x)
	if fast == "[]" {
		return r.rewriteExpr(x, ref)
	}
	return let("fast", fast, "size(fast) == 1 ? fast : "+r.rewriteExpr(x, ref))
}
