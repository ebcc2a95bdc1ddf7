//go:build ignore

// stand-ins.sh copies this file, less its build constraint, into the
// package it belongs to: github.com/abbot/go-http-auth, generated into
// .cache/traefik. Here it is not part of any build.

package auth

import (
	"fmt"
	"net/http"
	"time"
)

// RequireAuthStale is RequireAuth with stale=true in the challenge, telling
// the client that only its nonce was out of date (RFC 2617, 3.2.1), so it
// may retry with the same credentials without asking its user again.
//
// It is the one method traefik's fork, github.com/containous/go-http-auth,
// adds to this package, and the reason for this stand-in: the Go module
// proxy does not serve the fork, while it serves this upstream version
// (v0.4.1-0.20220112235402-e1cee1c72f2f), which stand-ins.sh copies as it
// is. traefik's digest-auth middleware calls it.
func (da *DigestAuth) RequireAuthStale(w http.ResponseWriter, _ *http.Request) {
	da.mutex.RLock()
	clientsLen := len(da.clients)
	da.mutex.RUnlock()

	if clientsLen > da.ClientCacheSize+da.ClientCacheTolerance {
		da.Purge(da.ClientCacheTolerance * 2)
	}
	nonce := RandomKey()

	da.mutex.Lock()
	da.clients[nonce] = &digestClient{nc: 0, lastSeen: time.Now().UnixNano()}
	da.mutex.Unlock()

	da.mutex.RLock()
	defer da.mutex.RUnlock()
	w.Header().Set(contentType, da.Headers.V().UnauthContentType)
	w.Header().Set(da.Headers.V().Authenticate,
		fmt.Sprintf(`Digest realm="%s", nonce="%s", opaque="%s", algorithm=MD5, qop="auth", stale=true`,
			da.Realm, nonce, da.Opaque))
	w.WriteHeader(da.Headers.V().UnauthCode)
	_, _ = w.Write([]byte(da.Headers.V().UnauthResponse))
}
