// Stand-in for github.com/traefik/traefik/dynamic/ext, a nested module of
// traefik's repository that traefik's go.mod replaces with its own folder
// (pkg/config/dynamic/ext). The module zip of traefik leaves nested modules
// out and the Go module proxy does not serve this one, so a module that
// requires traefik needs this replacement (see ../go.mod).
module github.com/traefik/traefik/dynamic/ext

go 1.26.0
