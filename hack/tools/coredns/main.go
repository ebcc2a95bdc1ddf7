// Command coredns is CoreDNS v1.15.0 with only the plugins the cluster tests
// (test/cluster) use: cluster DNS for Services and Pods. CoreDNS's own main
// links every plugin it ships, cloud DNS providers included, which costs
// minutes of compile time and modules the proxy here does not serve;
// CoreDNS documents building with a chosen plugin list, and this is that
// list in Go. hack/tools/node-bin.sh builds it.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	// The order plugins run in, which CoreDNS generates from its
	// plugin.cfg: the same relative order as upstream's list.
	dnsserver.Directives = []string{"bind", "ready", "health", "errors", "log", "cache", "kubernetes"}
	coremain.Run()
}
