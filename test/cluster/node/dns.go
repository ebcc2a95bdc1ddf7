package node

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

// Cluster DNS: CoreDNS runs as a process of the namespace on NodeIP, behind
// the kube-dns Service that the kubelet names as the Pods' name server, as
// kubeadm sets it up (except that the server is not a Pod: the node has no
// image for it, and a process is as real a CoreDNS).
const (
	ClusterDomain = "cluster.local"
	// ClusterDNSIP is the kube-dns Service's address, the tenth of
	// ServiceCIDR as kubeadm picks it.
	ClusterDNSIP = "10.96.0.10"
	dnsPort      = 53
	// dnsReadyPort serves CoreDNS's /ready: 200 once the kubernetes
	// plugin has synced its caches.
	dnsReadyPort = 8181
	dnsUser      = "system:coredns"
)

// corefile is CoreDNS's configuration: the cluster domain and reverse
// zones from the API server, served on NodeIP only. Other names get
// REFUSED at once: there is no upstream to forward to (nothing outside the
// namespace is reachable), and an immediate answer beats a timeout.
func corefile(kubeconfig string) string {
	return fmt.Sprintf(`%[1]s:%[2]d in-addr.arpa:%[2]d ip6.arpa:%[2]d {
    bind %[3]s
    errors
    health 127.0.0.1:8180
    ready 127.0.0.1:%[4]d
    kubernetes %[1]s in-addr.arpa ip6.arpa {
        kubeconfig %[5]q
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
`, ClusterDomain, dnsPort, NodeIP, dnsReadyPort, kubeconfig)
}

// startDNS gives CoreDNS its RBAC, starts it, publishes the kube-dns
// Service with NodeIP as its endpoint, and waits until CoreDNS is ready.
func (n *Node) startDNS(ctx context.Context) error {
	if err := n.applyDNSObjects(ctx); err != nil {
		return err
	}
	if err := writeFiles(n.dir, map[string]string{"Corefile": corefile(n.pki.kubeconfig("coredns"))}); err != nil {
		return err
	}
	var err error
	n.dns, err = n.start("coredns", filepath.Join(n.nodeAssets, "coredns"), nil, "-conf", filepath.Join(n.dir, "Corefile"))
	if err != nil {
		return err
	}
	return cluster.WaitHealthy(ctx, &http.Client{}, "http://127.0.0.1:"+strconv.Itoa(dnsReadyPort)+"/ready", n.dns)
}

// applyDNSObjects creates what kubeadm's CoreDNS add-on creates, less the
// Deployment: the system:coredns ClusterRole and binding, and the kube-dns
// Service, here without a selector and with an EndpointSlice of its own,
// since the server is the process on NodeIP.
func (n *Node) applyDNSObjects(ctx context.Context) error {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: dnsUser},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: dnsUser},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: dnsUser},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: dnsUser}},
	}
	labels := map[string]string{"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}
	ports := []corev1.ServicePort{
		{Name: "dns", Protocol: corev1.ProtocolUDP, Port: dnsPort, TargetPort: intstr.FromInt32(dnsPort)},
		{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: dnsPort, TargetPort: intstr.FromInt32(dnsPort)},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: metav1.NamespaceSystem, Labels: labels},
		Spec:       corev1.ServiceSpec{ClusterIP: ClusterDNSIP, Ports: ports},
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns-node", Namespace: metav1.NamespaceSystem, Labels: map[string]string{
			discoveryv1.LabelServiceName: "kube-dns",
			discoveryv1.LabelManagedBy:   "mutator-test-node",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{NodeIP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("dns"), Protocol: ptr.To(corev1.ProtocolUDP), Port: ptr.To[int32](dnsPort)},
			{Name: ptr.To("dns-tcp"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](dnsPort)},
		},
	}
	c := n.client
	creates := []struct {
		what   string
		create func() error
	}{
		{"ClusterRole " + dnsUser, func() error {
			_, err := c.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})
			return err
		}},
		{"ClusterRoleBinding " + dnsUser, func() error {
			_, err := c.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{})
			return err
		}},
		{"Service kube-system/kube-dns", func() error {
			_, err := c.CoreV1().Services(metav1.NamespaceSystem).Create(ctx, svc, metav1.CreateOptions{})
			return err
		}},
		{"EndpointSlice kube-system/kube-dns-node", func() error {
			_, err := c.DiscoveryV1().EndpointSlices(metav1.NamespaceSystem).Create(ctx, slice, metav1.CreateOptions{})
			return err
		}},
	}
	for _, o := range creates {
		// The kube-system namespace appears a moment after /readyz.
		if err := retryNotFound(ctx, o.create); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %s: %w", o.what, err)
		}
	}
	return nil
}

// retryNotFound calls create until it returns anything but NotFound (its
// namespace does not exist yet) or ctx ends.
func retryNotFound(ctx context.Context, create func() error) error {
	var last error
	err := cluster.WaitFor(ctx, 100*time.Millisecond, func(context.Context) (bool, error) {
		last = create()
		return !apierrors.IsNotFound(last), nil
	})
	if err != nil {
		return fmt.Errorf("%w (last: %w)", err, last)
	}
	return last
}
