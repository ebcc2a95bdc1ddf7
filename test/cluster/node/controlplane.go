package node

import (
	"context"
	"net/http"
	"path/filepath"
	"strconv"

	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

// startControlPlane starts etcd and kube-apiserver and waits for /readyz,
// then starts kube-controller-manager and kube-scheduler, which need no
// waiting: the kubelet's Pods wait for them anyway.
func (n *Node) startControlPlane(ctx context.Context, kubeAssets string) error {
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeerPort)
	var err error
	n.etcd, err = n.start("etcd", filepath.Join(kubeAssets, "etcd"), nil,
		"--name=node",
		// On the namespace's tmpfs: a throwaway store needs no disk.
		"--data-dir=/var/lib/etcd",
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=node="+peerURL,
		"--unsafe-no-fsync",
		"--quota-backend-bytes=1073741824",
	)
	if err != nil {
		return err
	}
	if err := cluster.WaitHealthy(ctx, &http.Client{}, etcdURL+"/health", n.etcd); err != nil {
		return err
	}

	p := n.pki
	n.apiserver, err = n.start("kube-apiserver", filepath.Join(kubeAssets, "kube-apiserver"), nil,
		"--etcd-servers="+etcdURL,
		"--secure-port="+strconv.Itoa(APIServerPort),
		// All addresses of the namespace, so that Pods reach it on NodeIP.
		"--bind-address=0.0.0.0",
		"--advertise-address="+NodeIP,
		"--tls-cert-file="+p.path("apiserver.crt"),
		"--tls-private-key-file="+p.path("apiserver.key"),
		"--client-ca-file="+p.path("ca.crt"),
		"--kubelet-client-certificate="+p.path("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+p.path("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority="+p.path("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+p.path("sa.pub"),
		"--service-account-signing-key-file="+p.path("sa.key"),
		"--service-cluster-ip-range="+ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		"--cert-dir="+filepath.Join(n.dir, "apiserver-certs"),
	)
	if err != nil {
		return err
	}
	if err := cluster.WaitHealthy(ctx, n.httpClient, n.restConfig.Host+"/readyz", n.etcd, n.apiserver); err != nil {
		return err
	}

	common := func(component string) []string {
		return []string{
			"--kubeconfig=" + p.kubeconfig(component),
			"--authentication-kubeconfig=" + p.kubeconfig(component),
			"--authorization-kubeconfig=" + p.kubeconfig(component),
			"--leader-elect=false",
			"--bind-address=127.0.0.1",
		}
	}
	n.controllerManager, err = n.start("kube-controller-manager", filepath.Join(n.nodeAssets, "kube-controller-manager"), nil,
		append(common("kube-controller-manager"),
			// Each controller with its own service account, as in a real
			// cluster (and as the default RBAC roles expect).
			"--use-service-account-credentials=true",
			"--service-account-private-key-file="+p.path("sa.key"),
			// Published as kube-root-ca.crt, which every Pod's token
			// volume needs before it can start.
			"--root-ca-file="+p.path("ca.crt"),
			"--cluster-name=mutator-test",
			"--cert-dir="+filepath.Join(n.dir, "controller-manager-certs"),
		)...)
	if err != nil {
		return err
	}
	n.scheduler, err = n.start("kube-scheduler", filepath.Join(n.nodeAssets, "kube-scheduler"), nil, common("kube-scheduler")...)
	return err
}
