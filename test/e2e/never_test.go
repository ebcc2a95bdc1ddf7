package e2e

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// originalImagesAnnotation is mutation.OriginalImagesAnnotation.
const originalImagesAnnotation = "mutator.dev/original-images"

// TestNeverPullAndOriginalImages creates, through the real kube-apiserver,
// a Pod whose container with pull policy Never names an image no mirror
// holds, beside an IfNotPresent one and image volumes of both policies:
// the API server stores the Never references as written (the kubelet
// pulls nothing for them; rewritten, they would fail with
// ErrImageNeverPull) and the others rewritten. With
// RECORD_ORIGINAL_IMAGES=true it stores the images as written of those
// rewritten in the annotation mutator.dev/original-images, and a later
// image change (kubectl set image) is merged into it. kubectl debug's
// ephemeral containers follow the same pull-policy rule.
func TestNeverPullAndOriginalImages(t *testing.T) {
	f := sharedFixture(t, "never-record", env{"REGISTRY": mirror, "RECORD_ORIGINAL_IMAGES": "true"})
	ctx := testContext(t)
	ns := namespace(t, f.scope())
	const unmirrored = "ghcr.io/example/node-local:dev"
	spec := corev1.PodSpec{
		InitContainers: []corev1.Container{c("setup", "busybox:1.36", never)},
		Containers: []corev1.Container{
			c("local", unmirrored, never),
			c("app", "nginx:1.27", ifNotPresent),
		},
		Volumes: []corev1.Volume{
			{Name: "preloaded", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: "ghcr.io/example/data:1", PullPolicy: never}}},
			{Name: "data", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: "ghcr.io/example/data:2", PullPolicy: ifNotPresent}}},
		},
	}
	pod := newPod("never", spec)
	pod.Annotations = map[string]string{"team": "a"}
	got := createAndGet(t, ns, pod)
	checkPod(t, "with pull policy Never", got, podView{
		Init:    []ctr{{"setup", "busybox:1.36", never}},
		Regular: []ctr{{"local", unmirrored, never}, {"app", mirror + "/nginx:1.27", ifNotPresent}},
	})
	volumes := map[string]string{}
	for _, v := range got.Spec.Volumes {
		volumes[v.Name] = v.Image.Reference
	}
	if want := map[string]string{"preloaded": "ghcr.io/example/data:1", "data": mirror + "/example/data:2"}; !equalMaps(volumes, want) {
		t.Errorf("stored image volumes %v, want %v", volumes, want)
	}
	checkOriginals(t, "after create", got, map[string]string{"containers/app": "nginx:1.27", "volumes/data": "ghcr.io/example/data:2"})
	if got.Annotations["team"] != "a" {
		t.Errorf("the Pod's own annotation is gone: %v", got.Annotations)
	}
	t.Logf("stored %s: %s", originalImagesAnnotation, got.Annotations[originalImagesAnnotation])

	// kubectl set image: the change is rewritten and recorded in place;
	// the Never container's new image is again left as written.
	pods := kube.Client().CoreV1().Pods(ns)
	got.Spec.Containers[1].Image = "nginx:1.28"
	got.Spec.Containers[0].Image = unmirrored + "-2"
	if _, err := pods.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("updating the images: %v", err)
	}
	got, err := pods.Get(ctx, got.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkPod(t, "after set image", got, podView{
		Init:    []ctr{{"setup", "busybox:1.36", never}},
		Regular: []ctr{{"local", unmirrored + "-2", never}, {"app", mirror + "/nginx:1.28", ifNotPresent}},
	})
	checkOriginals(t, "after set image", got, map[string]string{"containers/app": "nginx:1.28", "volumes/data": "ghcr.io/example/data:2"})

	// kubectl debug: an ephemeral container with pull policy Never is left
	// as written too, one that pulls is rewritten.
	got.Spec.EphemeralContainers = append(got.Spec.EphemeralContainers,
		corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "local-debug", Image: "debug:local", ImagePullPolicy: never}},
		corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug", Image: "busybox:1.37", ImagePullPolicy: ifNotPresent}})
	if _, err := pods.UpdateEphemeralContainers(ctx, got.Name, got, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("adding ephemeral containers: %v", err)
	}
	got, err = pods.Get(ctx, got.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkPod(t, "after kubectl debug", got, podView{
		Init:      []ctr{{"setup", "busybox:1.36", never}},
		Regular:   []ctr{{"local", unmirrored + "-2", never}, {"app", mirror + "/nginx:1.28", ifNotPresent}},
		Ephemeral: []ctr{{"local-debug", "debug:local", never}, {"debug", mirror + "/busybox:1.37", ifNotPresent}},
	})
	// The API server keeps nothing but spec.ephemeralContainers from the
	// ephemeralcontainers subresource, so the rules make no annotation
	// change there: the record stays as it was (the audit trail has the
	// debug container's image).
	checkOriginals(t, "after kubectl debug", got, map[string]string{"containers/app": "nginx:1.28", "volumes/data": "ghcr.io/example/data:2"})
}

// checkOriginals fails the test unless the stored Pod records exactly want
// in originalImagesAnnotation.
func checkOriginals(t *testing.T, what string, got *corev1.Pod, want map[string]string) {
	t.Helper()
	v, ok := got.Annotations[originalImagesAnnotation]
	if !ok {
		t.Errorf("%s: stored pod %s/%s has no %s (annotations %v)", what, got.Namespace, got.Name, originalImagesAnnotation, got.Annotations)
		return
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(v), &m); err != nil || !equalMaps(m, want) {
		t.Errorf("%s: %s = %s (%v), want %v", what, originalImagesAnnotation, v, err, want)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
