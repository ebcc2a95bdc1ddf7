package mirror

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

// FileKeychain is an authn.Keychain read from one docker config.json: the
// .dockerconfigjson key of a kubernetes.io/dockerconfigjson Secret mounted as
// a file (the legacy .dockercfg layout, without "auths", is read too). It
// reads only that file: authn.DefaultKeychain would read $HOME, $DOCKER_CONFIG
// and Podman's files, which the webhook has no business trusting.
//
// The file is read again when its modification time or size changes, so a
// rotated Secret is picked up without a restart; a file that no longer parses
// keeps the credentials read last.
type FileKeychain struct {
	path string

	mu    sync.Mutex
	mod   time.Time
	size  int64
	auths map[string]authn.AuthConfig // by lower-case registry host[:port]
}

var _ authn.Keychain = (*FileKeychain)(nil)

// NewFileKeychain reads path; an unreadable or invalid file is an error, so
// that a wrong MIRROR_CREDENTIALS stops the process at start.
func NewFileKeychain(path string) (*FileKeychain, error) {
	k := &FileKeychain{path: path}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("mirror credentials: %w", err)
	}
	if err := k.load(fi); err != nil {
		return nil, err
	}
	return k, nil
}

// Registries returns the hosts the file has credentials for, for logs (never
// the credentials).
func (k *FileKeychain) Registries() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]string, 0, len(k.auths))
	for h := range k.auths {
		out = append(out, h)
	}
	return out
}

// Resolve implements authn.Keychain: the credentials for the target's
// registry, or anonymous when the file has none.
func (k *FileKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	if fi, err := os.Stat(k.path); err == nil {
		k.mu.Lock()
		changed := !fi.ModTime().Equal(k.mod) || fi.Size() != k.size
		k.mu.Unlock()
		if changed {
			_ = k.load(fi) // keep the last good credentials
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if a, ok := k.auths[strings.ToLower(target.RegistryStr())]; ok {
		return authn.FromConfig(a), nil
	}
	return authn.Anonymous, nil
}

func (k *FileKeychain) load(fi os.FileInfo) error {
	b, err := os.ReadFile(k.path)
	if err != nil {
		return fmt.Errorf("mirror credentials: %w", err)
	}
	auths, err := parseDockerConfig(b)
	if err != nil {
		return fmt.Errorf("mirror credentials %s: %w", k.path, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.auths, k.mod, k.size = auths, fi.ModTime(), fi.Size()
	return nil
}

// parseDockerConfig reads {"auths": {"host": {"auth": "base64(user:pass)"}}}
// (or the same map without "auths"). authn.AuthConfig decodes the "auth"
// field. Keys are normalised the way docker does: a scheme and a path
// ("https://index.docker.io/v1/") are dropped, the host is lower-cased.
func parseDockerConfig(b []byte) (map[string]authn.AuthConfig, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("not a docker config.json: %w", err)
	}
	raw := b
	if a, ok := top["auths"]; ok {
		raw = a
	}
	var byKey map[string]authn.AuthConfig
	if err := json.Unmarshal(raw, &byKey); err != nil {
		return nil, fmt.Errorf("not a docker config.json: %w", err)
	}
	out := make(map[string]authn.AuthConfig, len(byKey))
	for key, a := range byKey {
		host := key
		if i := strings.Index(host, "://"); i >= 0 {
			host = host[i+3:]
		}
		if i := strings.IndexByte(host, '/'); i >= 0 {
			host = host[:i]
		}
		if host == "" {
			return nil, fmt.Errorf("entry %q names no registry host", key)
		}
		out[strings.ToLower(host)] = a
	}
	return out, nil
}
