package e2e

import (
	"context"
	"net"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mutator-dev/mutator/function/events"
)

// TestAuditTrail checks the CloudEvents audit trail end to end: a Pod created
// through the real API server produces one event at a real CloudEvents
// receiver, and a server-side dry run produces none.
func TestAuditTrail(t *testing.T) {
	ctx := testContext(t)
	received := make(chan cloudevents.Event, 16)
	sink := startReceiver(t, received)

	f := newFixture(t, "events", cfgImages.with(env{"K_SINK": sink, "EVENT_SOURCE": "e2e-mutator"}), admissionregistrationv1.Fail)
	ns := namespace(t, f.scope())
	pods := kube.Client().CoreV1().Pods(ns)
	spec := corev1.PodSpec{Containers: []corev1.Container{c("web", "nginx:1.27", "")}}

	// The dry run goes first: the emitter sends in order from one queue, so
	// if the real create's event is the first to arrive, the dry run sent
	// nothing.
	if _, err := pods.Create(ctx, newPod("dry", spec), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatalf("dry-run create: %v", err)
	}
	created, err := pods.Create(ctx, newPod("audited", spec), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create: %v", err)
	}

	var ev cloudevents.Event
	select {
	case ev = <-received:
	case <-time.After(20 * time.Second):
		t.Fatalf("no audit event within 20s; mutator log:\n%s", f.mutator.logTail(20))
	}
	if ev.Type() != "dev.mutator.pod.mutated" || ev.Source() != "e2e-mutator" {
		t.Errorf("event type %q source %q", ev.Type(), ev.Source())
	}
	if want := ns + "/audited-"; ev.Subject() != want {
		t.Errorf("subject %q, want %q (the dry run must send nothing)", ev.Subject(), want)
	}
	var data events.Data
	if err := ev.DataAs(&data); err != nil {
		t.Fatalf("event data: %v", err)
	}
	if data.Operation != "CREATE" || data.Namespace != ns || data.DryRun || data.User == "" || data.UID == "" {
		t.Errorf("event data = %+v", data)
	}
	if len(data.Changes) != 1 || data.Changes[0].From != "nginx:1.27" || data.Changes[0].To != mirror+"/nginx:1.27" {
		t.Errorf("event changes = %+v", data.Changes)
	}
	if created.Spec.Containers[0].Image != mirror+"/nginx:1.27" {
		t.Errorf("stored image %q", created.Spec.Containers[0].Image)
	}
	select {
	case extra := <-received:
		t.Errorf("unexpected second event: %s", extra)
	default:
	}
}

// startReceiver runs sdk-go's HTTP receiver on loopback and returns its URL.
func startReceiver(t *testing.T, out chan<- cloudevents.Event) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := cloudevents.NewHTTP(cehttp.WithListener(l))
	if err != nil {
		t.Fatal(err)
	}
	client, err := cloudevents.NewClient(p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = client.StartReceiver(ctx, func(ev cloudevents.Event) { out <- ev })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + l.Addr().String()
}
