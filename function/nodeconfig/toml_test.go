package nodeconfig

import (
	"fmt"
	"strings"
	"testing"
)

// The module graph holds no TOML library, so the tests read the generated
// files back with this strict reader of the subset they are written in:
// comments, [table] and [[array]] headers with bare or basic-string keys,
// and key = value with basic strings, booleans and arrays of basic strings.
// Anything else is an error, so output outside the subset fails the tests
// instead of being read leniently. containerd itself reads the files in
// test/cluster's TestNodeConfig.

// tomlTable is one table: the root (name nil), a [table] or an [[array]]
// element, with its keys.
type tomlTable struct {
	name  []string
	array bool
	keys  map[string]any // string, bool or []string
}

func parseTOML(content string) ([]tomlTable, error) {
	tables := []tomlTable{{keys: map[string]any{}}}
	seen := map[string]bool{}
	for n, line := range strings.Split(content, "\n") {
		line = strings.TrimSpace(line)
		fail := func(format string, args ...any) error {
			return fmt.Errorf("line %d %q: %s", n+1, line, fmt.Sprintf(format, args...))
		}
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "[[") && strings.HasSuffix(line, "]]"):
			name, err := parseKey(line[2 : len(line)-2])
			if err != nil {
				return nil, fail("%v", err)
			}
			tables = append(tables, tomlTable{name: name, array: true, keys: map[string]any{}})
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			name, err := parseKey(line[1 : len(line)-1])
			if err != nil {
				return nil, fail("%v", err)
			}
			id := strings.Join(name, "\x00")
			if seen[id] {
				return nil, fail("table defined twice")
			}
			seen[id] = true
			tables = append(tables, tomlTable{name: name, keys: map[string]any{}})
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return nil, fail("not a key = value line")
			}
			key, err := parseKey(strings.TrimSpace(k))
			if err != nil || len(key) != 1 {
				return nil, fail("bad key")
			}
			value, err := parseValue(strings.TrimSpace(v))
			if err != nil {
				return nil, fail("%v", err)
			}
			t := &tables[len(tables)-1]
			if _, dup := t.keys[key[0]]; dup {
				return nil, fail("key %s set twice", key[0])
			}
			t.keys[key[0]] = value
		}
	}
	return tables, nil
}

// parseKey reads a dotted key of bare and basic-string parts.
func parseKey(s string) ([]string, error) {
	var parts []string
	for s = strings.TrimSpace(s); s != ""; {
		var part string
		if s[0] == '"' {
			str, rest, err := parseString(s)
			if err != nil {
				return nil, err
			}
			part, s = str, rest
		} else {
			end := strings.IndexAny(s, ". ")
			if end < 0 {
				end = len(s)
			}
			part, s = s[:end], s[end:]
			for _, r := range part {
				if !strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", r) {
					return nil, fmt.Errorf("bare key %q has %q", part, r)
				}
			}
			if part == "" {
				return nil, fmt.Errorf("empty key part")
			}
		}
		parts = append(parts, part)
		s = strings.TrimSpace(s)
		if s == "" {
			break
		}
		if s[0] != '.' {
			return nil, fmt.Errorf("junk after key: %q", s)
		}
		s = strings.TrimSpace(s[1:])
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("empty key")
	}
	return parts, nil
}

// parseString reads a basic string at the start of s, returning the rest.
func parseString(s string) (string, string, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return b.String(), s[i+1:], nil
		case c == '\\':
			if i+1 == len(s) || s[i+1] != '"' && s[i+1] != '\\' {
				return "", "", fmt.Errorf("escape outside the subset in %q", s)
			}
			b.WriteByte(s[i+1])
			i++
		case c < 0x20 || c == 0x7f:
			return "", "", fmt.Errorf("control character in a string: %q", s)
		default:
			b.WriteByte(c)
		}
	}
	return "", "", fmt.Errorf("unterminated string %q", s)
}

func parseValue(s string) (any, error) {
	switch {
	case s == "true":
		return true, nil
	case s == "false":
		return false, nil
	case strings.HasPrefix(s, `"`):
		str, rest, err := parseString(s)
		if err == nil && rest != "" {
			err = fmt.Errorf("junk after string: %q", rest)
		}
		return str, err
	case strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]"):
		list := []string{}
		rest := strings.TrimSpace(s[1 : len(s)-1])
		for rest != "" {
			str, r, err := parseString(rest)
			if err != nil {
				return nil, err
			}
			list = append(list, str)
			rest = strings.TrimSpace(r)
			if rest == "" {
				break
			}
			if rest[0] != ',' {
				return nil, fmt.Errorf("junk in array: %q", rest)
			}
			rest = strings.TrimSpace(rest[1:])
		}
		return list, nil
	}
	return nil, fmt.Errorf("value outside the subset: %q", s)
}

// hostsFile is a hosts.toml as containerd reads it.
type hostsFile struct {
	root  map[string]any
	hosts []hostEntry // in file order, which is the order containerd tries them
}

type hostEntry struct {
	url  string
	keys map[string]any
}

func parseHosts(t *testing.T, content string) hostsFile {
	t.Helper()
	tables, err := parseTOML(content)
	if err != nil {
		t.Fatalf("hosts.toml does not parse: %v\n%s", err, content)
	}
	f := hostsFile{root: tables[0].keys}
	for _, tb := range tables[1:] {
		if tb.array || len(tb.name) != 2 || tb.name[0] != "host" {
			t.Fatalf("hosts.toml has table %q, want only [host.\"URL\"]\n%s", tb.name, content)
		}
		f.hosts = append(f.hosts, hostEntry{url: tb.name[1], keys: tb.keys})
	}
	for _, keys := range append([]map[string]any{f.root}, func() (ks []map[string]any) {
		for _, h := range f.hosts {
			ks = append(ks, h.keys)
		}
		return
	}()...) {
		for k := range keys {
			// The keys containerd 2.4's hostFileConfig reads; a typo
			// would be ignored by it without a word.
			switch k {
			case "server", "capabilities", "ca", "skip_verify", "override_path":
			default:
				t.Fatalf("hosts.toml sets %q, not a key this package writes\n%s", k, content)
			}
		}
	}
	return f
}

// crioRegistry is one [[registry]] table with its mirrors.
type crioRegistry struct {
	keys    map[string]any
	mirrors []map[string]any
}

func parseCRIO(t *testing.T, content string) []crioRegistry {
	t.Helper()
	tables, err := parseTOML(content)
	if err != nil {
		t.Fatalf("registries.conf does not parse: %v\n%s", err, content)
	}
	if len(tables[0].keys) != 0 {
		t.Fatalf("registries.conf sets global keys %v", tables[0].keys)
	}
	var regs []crioRegistry
	for _, tb := range tables[1:] {
		switch name := strings.Join(tb.name, "."); {
		case tb.array && name == "registry":
			regs = append(regs, crioRegistry{keys: tb.keys})
		case tb.array && name == "registry.mirror" && len(regs) > 0:
			regs[len(regs)-1].mirrors = append(regs[len(regs)-1].mirrors, tb.keys)
		default:
			t.Fatalf("registries.conf has table %q\n%s", name, content)
		}
	}
	return regs
}

func TestParseTOMLRejects(t *testing.T) {
	for _, bad := range []string{
		"server = https://x",
		"[host.\"a\"]\n[host.\"a\"]",
		"a = \"x\\n\"",
		"a = \"x\"\na = \"y\"",
		"a = 1",
		"[host.\"a]",
	} {
		if _, err := parseTOML(bad); err == nil {
			t.Errorf("parseTOML(%q) succeeded", bad)
		}
	}
}
