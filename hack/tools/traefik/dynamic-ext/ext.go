// Package ext is the extension point of traefik's dynamic configuration:
// upstream, in traefik v3.7.13, it declares exactly these empty types,
// which pkg/config/dynamic embeds inline in HTTPConfiguration and Router
// (a build of traefik with extensions swaps the module). Empty here too,
// so traefik's configuration is the one upstream builds.
package ext

// HTTP is embedded in traefik's dynamic.HTTPConfiguration.
type HTTP struct{}

// Router is embedded in traefik's dynamic.Router.
type Router struct{}

// RouterIng is the Ingress-side counterpart of Router.
type RouterIng struct{}

// ToRouter converts r into the embedded Router part.
func (RouterIng) ToRouter() Router { return Router{} }
