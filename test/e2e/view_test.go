package e2e

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// ctr is what the tests check of a container: name, image and pull policy.
type ctr struct {
	Name   string
	Image  string
	Policy corev1.PullPolicy
}

func (c ctr) String() string { return fmt.Sprintf("%s=%s(%s)", c.Name, c.Image, c.Policy) }

// podView is what the mutator may change in a Pod.
type podView struct {
	Init      []ctr
	Regular   []ctr
	Ephemeral []ctr
	Secrets   []string
}

func (v podView) String() string {
	return fmt.Sprintf("initContainers=%v containers=%v ephemeralContainers=%v imagePullSecrets=%q",
		v.Init, v.Regular, v.Ephemeral, v.Secrets)
}

// viewOf extracts the podView of a Pod; empty lists are nil.
func viewOf(p *corev1.Pod) podView {
	var v podView
	for _, c := range p.Spec.InitContainers {
		v.Init = append(v.Init, ctr{c.Name, c.Image, c.ImagePullPolicy})
	}
	for _, c := range p.Spec.Containers {
		v.Regular = append(v.Regular, ctr{c.Name, c.Image, c.ImagePullPolicy})
	}
	for _, c := range p.Spec.EphemeralContainers {
		v.Ephemeral = append(v.Ephemeral, ctr{c.Name, c.Image, c.ImagePullPolicy})
	}
	for _, s := range p.Spec.ImagePullSecrets {
		v.Secrets = append(v.Secrets, s.Name)
	}
	return v
}

// checkPod fails the test if the stored Pod's view differs from want, saying
// which fields differ and showing both views.
func checkPod(t *testing.T, what string, got *corev1.Pod, want podView) {
	t.Helper()
	gv := viewOf(got)
	if reflect.DeepEqual(gv, want) {
		return
	}
	var diffs []string
	diff := func(field string, g, w any) {
		if !reflect.DeepEqual(g, w) {
			diffs = append(diffs, fmt.Sprintf("  %s: got %v, want %v", field, g, w))
		}
	}
	diff("initContainers", gv.Init, want.Init)
	diff("containers", gv.Regular, want.Regular)
	diff("ephemeralContainers", gv.Ephemeral, want.Ephemeral)
	diff("imagePullSecrets", gv.Secrets, want.Secrets)
	t.Errorf("%s: stored pod %s/%s differs:\n%s\n  stored: %v\n  want:   %v",
		what, got.Namespace, got.Name, strings.Join(diffs, "\n"), gv, want)
}

// secrets builds an imagePullSecrets list.
func secrets(names ...string) []corev1.LocalObjectReference {
	var refs []corev1.LocalObjectReference
	for _, n := range names {
		refs = append(refs, corev1.LocalObjectReference{Name: n})
	}
	return refs
}

// c builds a container with an optional explicit pull policy.
func c(name, image string, policy corev1.PullPolicy) corev1.Container {
	return corev1.Container{Name: name, Image: image, ImagePullPolicy: policy}
}
