package mirror

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestParseDockerConfig reads the layouts a pull Secret comes in.
func TestParseDockerConfig(t *testing.T) {
	tests := []struct {
		name     string
		json     string
		host     string
		wantUser string
		wantErr  bool
	}{
		{"dockerconfigjson", `{"auths":{"mirror.example.com":{"auth":"` + b64("robot:pw") + `"}}}`, "mirror.example.com", "robot", false},
		{"username and password fields", `{"auths":{"mirror.example.com:5000":{"username":"u","password":"p"}}}`, "mirror.example.com:5000", "u", false},
		{"scheme, path and case are dropped", `{"auths":{"https://Mirror.Example.com/v1/":{"auth":"` + b64("robot:pw") + `"}}}`, "mirror.example.com", "robot", false},
		{"legacy dockercfg", `{"mirror.example.com":{"auth":"` + b64("old:pw") + `"}}`, "mirror.example.com", "old", false},
		{"auth not base64", `{"auths":{"mirror.example.com":{"auth":"%%%"}}}`, "", "", true},
		{"not JSON", `auths: {}`, "", "", true},
		{"credential store only", `{"credsStore":"desktop"}`, "", "", true},
		{"no host", `{"auths":{"https://":{"auth":"` + b64("a:b") + `"}}}`, "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auths, err := parseDockerConfig([]byte(tt.json))
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if got := auths[tt.host].Username; got != tt.wantUser {
				t.Errorf("user for %s = %q, want %q (all: %v)", tt.host, got, tt.wantUser, auths)
			}
		})
	}
}

// TestFileKeychainReload: a rotated Secret (the file changes) is read again;
// a broken file keeps the last good credentials; other hosts are anonymous.
func TestFileKeychainReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	write := func(body string, mod time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	write(`{"auths":{"mirror.example.com":{"auth":"`+b64("one:pw")+`"}}}`, t0)
	k, err := NewFileKeychain(path)
	if err != nil {
		t.Fatal(err)
	}
	user := func(host string) string {
		t.Helper()
		reg, err := name.NewRegistry(host)
		if err != nil {
			t.Fatal(err)
		}
		a, err := k.Resolve(reg)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := a.Authorization()
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Username
	}
	steps := []struct {
		name string
		body string // "" keeps the file
		host string
		want string
	}{
		{"initial", "", "mirror.example.com", "one"},
		{"other host is anonymous", "", "evil.example.com", ""},
		{"rotated", `{"auths":{"mirror.example.com":{"auth":"` + b64("two:pw") + `"}}}`, "mirror.example.com", "two"},
		{"broken file keeps the last good", `{"auths":`, "mirror.example.com", "two"},
	}
	for i, s := range steps {
		if s.body != "" {
			write(s.body, t0.Add(time.Duration(i)*time.Minute))
		}
		if got := user(s.host); got != s.want {
			t.Errorf("%s: user %q, want %q", s.name, got, s.want)
		}
	}
	if _, err := NewFileKeychain(filepath.Join(t.TempDir(), "absent.json")); err == nil {
		t.Error("NewFileKeychain of a missing file: no error")
	}
	var _ authn.Keychain = k
}
