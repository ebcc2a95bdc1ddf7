package app

// The function image (ko, on a base of passwd and group files only) and any
// static base without /etc/ssl have no CA certificates: without roots of its
// own, TLS to a mirror or an https K_SINK with a public certificate fails,
// and MIRROR_CHECK with MIRROR_UNREACHABLE=rewrite would then check nothing.
// The fallback bundle (Mozilla's roots, compiled in) is used only where the
// system has none, so an image's own certificates, SSL_CERT_FILE and
// SSL_CERT_DIR (a private CA) still take precedence.
import _ "golang.org/x/crypto/x509roots/fallback"
