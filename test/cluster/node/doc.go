// Package node runs a real single-node Kubernetes cluster for tests: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, containerd (with
// Debian's runc and CNI plugins), the kubelet, kube-proxy and CoreDNS, all inside
// network, mount and PID namespaces that the test binary creates for itself.
//
// A test binary that uses it runs in three stages, told apart by an
// environment variable (see CurrentStage):
//
//  1. host: the process `go test` started. It re-executes itself in new
//     namespaces (Isolate), waits, and then checks that nothing of the run
//     survived: no process, no mount, no cgroup, no changed sysctl.
//  2. init: PID 1 of the new PID namespace (InitMain). It makes every mount
//     private, mounts tmpfs over the fixed paths the kubelet and containerd
//     write (/run, /var/lib, /var/log), hides the global sysctls the kubelet
//     sets behind files, brings up loopback with the node IP, starts the
//     test stage and reaps orphans. When it exits, the kernel kills every
//     process left in the namespace, and the mounts go with the mount
//     namespace: that is what makes teardown certain even after a panic, a
//     timeout or kill -9.
//  3. test: runs the tests; Start brings the cluster up.
//
// The network namespace has loopback only (no route out), so the cluster
// (bridge, Pod and Service addresses) cannot reach anything but itself.
package node
