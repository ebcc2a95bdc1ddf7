package manifests_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/manifests"
	"github.com/mutator-dev/mutator/function/mutation"
	"github.com/mutator-dev/mutator/internal/testkit"
)

const (
	mirror = "registry.example.com/mirror"
	secret = "regcred"
	digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

func testConfig() config.Env {
	return config.Env{
		Registry:               mirror,
		ImagePullSecret:        secret,
		ForceImagePullPolicy:   true,
		ImagePullPolicyToForce: "Always",
		DefaultStorageClass:    "fast",
		ExcludeNamespaces:      config.List{"kube-system"},
	}
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mutate runs Mutator.Mutate over in and fails the test on an error.
func mutate(t *testing.T, cfg config.Env, in []byte) (manifests.Result, []byte) {
	t.Helper()
	c := testkit.Config(t, cfg)
	m := manifests.New(c.Rules, c.Review)
	var out bytes.Buffer
	res, err := m.Mutate(bytes.NewReader(in), &out)
	if err != nil {
		t.Fatalf("Mutate: %v", err)
	}
	return res, out.Bytes()
}

// splitDocs splits YAML output into its documents the way kubectl reads them.
func splitDocs(t *testing.T, out []byte) [][]byte {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("reading output: %v\n%s", err, out)
		}
		if !commentOnly(doc) {
			docs = append(docs, doc)
		}
	}
}

// commentOnly reports whether a document has nothing but comments and
// white space, which kubectl skips.
func commentOnly(doc []byte) bool {
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if line = bytes.TrimSpace(line); len(line) > 0 && line[0] != '#' {
			return false
		}
	}
	return true
}

// decodeYAML decodes one output document strictly into v.
func decodeYAML(t *testing.T, doc []byte, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		t.Fatalf("decoding %T: %v\n%s", v, err, doc)
	}
}

// ctr is what a test expects of one container.
type ctr struct {
	name, image string
	policy      corev1.PullPolicy
}

func assertContainers(t *testing.T, what string, got []corev1.Container, want []ctr) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d containers, want %d", what, len(got), len(want))
	}
	for i, w := range want {
		if g := got[i]; g.Name != w.name || g.Image != w.image || g.ImagePullPolicy != w.policy {
			t.Errorf("%s[%d] = {%s %q %q}, want {%s %q %q}", what, i, g.Name, g.Image, g.ImagePullPolicy, w.name, w.image, w.policy)
		}
	}
}

func assertSecrets(t *testing.T, what string, got []corev1.LocalObjectReference, want ...string) {
	t.Helper()
	names := []string{}
	for _, s := range got {
		names = append(names, s.Name)
	}
	if len(names) != len(want) || (len(want) > 0 && !reflect.DeepEqual(names, want)) {
		t.Errorf("%s imagePullSecrets = %q, want %q", what, names, want)
	}
}

// between returns the part of s from the start of from up to to, or up to
// the end when to is "".
func between(t *testing.T, s []byte, from, to string) []byte {
	t.Helper()
	i := bytes.Index(s, []byte(from))
	if i < 0 {
		t.Fatalf("%q not found", from)
	}
	if to == "" {
		return s[i:]
	}
	j := bytes.Index(s[i:], []byte(to))
	if j < 0 {
		t.Fatalf("%q not found after %q", to, from)
	}
	return s[i : i+j]
}

func TestMutateMultiDocumentYAML(t *testing.T) {
	t.Parallel()
	in := readTestdata(t, "all.yaml")
	res, out := mutate(t, testConfig(), in)

	if res.Documents != 7 || res.Changed != 5 {
		t.Errorf("Result Documents, Changed = %d, %d; want 7, 5", res.Documents, res.Changed)
	}
	// Pod 3, Deployment 5, CronJob 3, StatefulSet 3, PVC 1.
	kinds := map[mutation.Kind]int{}
	for _, c := range res.Changes {
		kinds[c.Kind]++
	}
	wantKinds := map[mutation.Kind]int{mutation.KindImage: 5, mutation.KindPullPolicy: 5, mutation.KindPullSecret: 4, mutation.KindStorageClass: 1}
	if !reflect.DeepEqual(kinds, wantKinds) {
		t.Errorf("changes by kind = %v, want %v", kinds, wantKinds)
	}

	docs := splitDocs(t, out)
	if len(docs) != 7 {
		t.Fatalf("%d output documents, want 7:\n%s", len(docs), out)
	}

	t.Run("Pod", func(t *testing.T) {
		var pod corev1.Pod
		decodeYAML(t, docs[0], &pod)
		assertContainers(t, "containers", pod.Spec.Containers, []ctr{{"app", mirror + "/nginx:1.27", "Always"}})
		assertSecrets(t, "pod", pod.Spec.ImagePullSecrets, secret)
		if p := pod.Spec.Containers[0].Ports; len(p) != 1 || p[0].ContainerPort != 80 {
			t.Errorf("ports = %+v, want containerPort 80 kept", p)
		}
	})
	t.Run("Deployment", func(t *testing.T) {
		var d appsv1.Deployment
		decodeYAML(t, docs[1], &d)
		ps := d.Spec.Template.Spec
		assertContainers(t, "initContainers", ps.InitContainers, []ctr{{"migrate", mirror + "/busybox", "Always"}})
		assertContainers(t, "containers", ps.Containers, []ctr{{"api", mirror + "/org/api:1.0", "Always"}})
		assertSecrets(t, "deployment", ps.ImagePullSecrets, secret)
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 || d.Name != "api" {
			t.Errorf("unrelated fields changed: name %q replicas %v", d.Name, d.Spec.Replicas)
		}
	})
	t.Run("CronJob", func(t *testing.T) {
		var cj batchv1.CronJob
		decodeYAML(t, docs[2], &cj)
		ps := cj.Spec.JobTemplate.Spec.Template.Spec
		assertContainers(t, "containers", ps.Containers, []ctr{{"job", mirror + "/alpine:3", "Always"}})
		assertSecrets(t, "cronjob", ps.ImagePullSecrets, secret)
		if cj.Spec.Schedule != "0 3 * * *" || ps.RestartPolicy != corev1.RestartPolicyOnFailure {
			t.Errorf("unrelated fields changed: schedule %q restartPolicy %q", cj.Spec.Schedule, ps.RestartPolicy)
		}
	})
	t.Run("StatefulSet", func(t *testing.T) {
		var s appsv1.StatefulSet
		decodeYAML(t, docs[3], &s)
		ps := s.Spec.Template.Spec
		assertContainers(t, "containers", ps.Containers, []ctr{{"postgres", mirror + "/postgres:16@" + digest, "Always"}})
		assertSecrets(t, "statefulset", ps.ImagePullSecrets, secret)
	})
	t.Run("PersistentVolumeClaim", func(t *testing.T) {
		var pvc corev1.PersistentVolumeClaim
		decodeYAML(t, docs[4], &pvc)
		if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "fast" {
			t.Errorf("storageClassName = %v, want fast", pvc.Spec.StorageClassName)
		}
		if q := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; q.String() != "1Gi" {
			t.Errorf("storage request = %s, want 1Gi", q.String())
		}
	})
	t.Run("ConfigMap byte for byte", func(t *testing.T) {
		want := between(t, in, "# This ConfigMap", "---\napiVersion: v1\nkind: Service")
		if !bytes.Equal(docs[5], want) {
			t.Errorf("ConfigMap document changed:\n got %q\nwant %q", docs[5], want)
		}
		var cm corev1.ConfigMap
		decodeYAML(t, docs[5], &cm)
		if cm.Data["image"] != "nginx:1.27" {
			t.Errorf("ConfigMap data = %v", cm.Data)
		}
	})
	t.Run("Service byte for byte", func(t *testing.T) {
		want := between(t, in, "apiVersion: v1\nkind: Service", "")
		if !bytes.Equal(docs[6], want) {
			t.Errorf("Service document changed:\n got %q\nwant %q", docs[6], want)
		}
	})
	t.Run("idempotent", func(t *testing.T) {
		res2, out2 := mutate(t, testConfig(), out)
		if res2.Changed != 0 || len(res2.Changes) != 0 {
			t.Errorf("second pass changed %d documents: %+v", res2.Changed, res2.Changes)
		}
		if !bytes.Equal(out2, out) {
			t.Errorf("second pass output differs:\n%s\n---- first pass ----\n%s", out2, out)
		}
	})
}

func TestMutateList(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"List", "PodList"} {
		t.Run(kind, func(t *testing.T) {
			in := bytes.Replace(readTestdata(t, "list.yaml"), []byte("kind: List"), []byte("kind: "+kind), 1)
			res, out := mutate(t, testConfig(), in)
			if res.Documents != 1 || res.Changed != 1 || len(res.Changes) != 3 {
				t.Errorf("Result = %d documents, %d changed, %d changes; want 1, 1, 3", res.Documents, res.Changed, len(res.Changes))
			}
			var list struct {
				APIVersion string            `json:"apiVersion"`
				Kind       string            `json:"kind"`
				Items      []json.RawMessage `json:"items"`
			}
			decodeYAML(t, out, &list)
			if list.Kind != kind || len(list.Items) != 3 {
				t.Fatalf("output kind %q with %d items, want %s with 3", list.Kind, len(list.Items), kind)
			}
			var inside, system corev1.Pod
			var claim corev1.PersistentVolumeClaim
			decodeYAML(t, list.Items[0], &inside)
			decodeYAML(t, list.Items[1], &system)
			decodeYAML(t, list.Items[2], &claim)
			assertContainers(t, "inside", inside.Spec.Containers, []ctr{{"app", mirror + "/nginx:1.27", "Always"}})
			assertSecrets(t, "inside", inside.Spec.ImagePullSecrets, secret)
			assertContainers(t, "excluded", system.Spec.Containers, []ctr{{"app", "nginx:1.27", ""}})
			assertSecrets(t, "excluded", system.Spec.ImagePullSecrets)
			if claim.Spec.StorageClassName == nil || *claim.Spec.StorageClassName != "" {
				t.Errorf(`claim storageClassName = %v, want ""`, claim.Spec.StorageClassName)
			}
		})
	}
}

func TestMutateJSON(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.ImagePullSecretAppend = true
	res, out := mutate(t, cfg, readTestdata(t, "pod.json"))
	if res.Documents != 1 || res.Changed != 1 || len(res.Changes) != 3 {
		t.Errorf("Result = %d documents, %d changed, %d changes; want 1, 1, 3", res.Documents, res.Changed, len(res.Changes))
	}
	if !json.Valid(out) || !bytes.HasPrefix(bytes.TrimSpace(out), []byte("{")) {
		t.Fatalf("output is not JSON:\n%s", out)
	}
	var pod corev1.Pod
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pod); err != nil {
		t.Fatalf("decoding output: %v\n%s", err, out)
	}
	assertContainers(t, "containers", pod.Spec.Containers, []ctr{{"app", mirror + "/org/app:2", "Always"}})
	assertSecrets(t, "pod", pod.Spec.ImagePullSecrets, "old1", "old2", secret)
}

func TestMutateUnchanged(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       string
		wantDocs int
	}{
		{"excluded namespace", string(readTestdata(t, "excluded.yaml")), 2},
		{"pod without spec", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n", 1},
		{"deployment without template spec", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  template:\n    metadata: {}\n", 1},
		{"pod already done", "apiVersion: v1\nkind: Pod\nspec:\n  imagePullSecrets:\n  - name: " + secret + "\n  containers:\n  - {name: a, image: '" + mirror + "/a', imagePullPolicy: Always}\n", 1},
		{"pvc with class", "kind: PersistentVolumeClaim\napiVersion: v1\nspec:\n  storageClassName: slow  # chosen\n", 1},
		{"unknown kind", "apiVersion: example.com/v1\nkind: Widget\nspec:\n  image: nginx\n", 1},
		{"empty input", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, out := mutate(t, testConfig(), []byte(tt.in))
			if res.Documents != tt.wantDocs || res.Changed != 0 || len(res.Changes) != 0 {
				t.Errorf("Result = %+v, want %d documents and no changes", res, tt.wantDocs)
			}
			if string(out) != tt.in {
				t.Errorf("output differs from input:\n got %q\nwant %q", out, tt.in)
			}
		})
	}
}

func TestMutateErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"malformed second document", string(readTestdata(t, "malformed.yaml")), "document 2"},
		{"scalar document", "apiVersion: v1\nkind: Pod\n---\njust a string\n", "document 2"},
		{"bad containers", "apiVersion: v1\nkind: Pod\nspec:\n  containers: 3\n", "document 1"},
		{"bad list item", "apiVersion: v1\nkind: List\nitems:\n- kind: Pod\n  spec:\n    containers: {a: b}\n", "item 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testkit.Config(t, testConfig())
			_, err := manifests.New(c.Rules, c.Review).Mutate(strings.NewReader(tt.in), io.Discard)
			if err == nil {
				t.Fatalf("Mutate(%q): want an error", tt.in)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

// TestMutateSameAsWebhook: the preview reads Pods the way the webhook does.
// Image volumes are rewritten and their pull policy forced; a member
// spelled in another case ("IMAGE") is not the image, as for the API
// server; a reference no allowed registry can serve is reported as the
// denial the webhook would make.
func TestMutateSameAsWebhook(t *testing.T) {
	t.Parallel()
	long := "evil.example.com/" + strings.Repeat("a", 250)
	tests := []struct {
		name         string
		in           string
		wantImages   []string // containers' images, then image volumes' references
		wantProblems []string
	}{
		{"image volume", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"nginx"}],
			"volumes":[{"name":"ext","image":{"reference":"ghcr.io/o/ext:1"}}]}}`,
			[]string{mirror + "/nginx", mirror + "/o/ext:1"}, nil},
		{"pod template image volume", `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"template":{"spec":{
			"containers":[{"name":"a","image":"nginx"}],"volumes":[{"name":"ext","image":{"reference":"ghcr.io/o/ext:1"}}]}}}}`,
			[]string{mirror + "/nginx", mirror + "/o/ext:1"}, nil},
		{"case-sensitive members", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"` + mirror + `/x","IMAGE":"nginx"}]}}`,
			[]string{mirror + "/x"}, nil},
		{"refused reference", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"` + long + `"}]}}`,
			[]string{long}, []string{`container "a"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, out := mutate(t, testConfig(), []byte(tt.in))
			var obj struct {
				Spec struct {
					corev1.PodSpec
					Template struct {
						Spec corev1.PodSpec `json:"spec"`
					} `json:"template"`
				} `json:"spec"`
			}
			if err := json.Unmarshal(out, &obj); err != nil {
				t.Fatalf("output %s: %v", out, err)
			}
			spec := obj.Spec.PodSpec
			if len(spec.Containers) == 0 {
				spec = obj.Spec.Template.Spec
			}
			var got []string
			for _, c := range spec.Containers {
				got = append(got, c.Image)
			}
			for _, v := range spec.Volumes {
				got = append(got, v.Image.Reference)
				if v.Image.PullPolicy != corev1.PullAlways {
					t.Errorf("image volume %s pull policy %q, want Always", v.Name, v.Image.PullPolicy)
				}
			}
			if !reflect.DeepEqual(got, tt.wantImages) {
				t.Errorf("images %q, want %q", got, tt.wantImages)
			}
			var problems []string
			for _, p := range res.Problems {
				problems = append(problems, p.Where)
			}
			if !reflect.DeepEqual(problems, tt.wantProblems) {
				t.Errorf("problems %q, want %q", problems, tt.wantProblems)
			}
		})
	}
}

// TestMutateKeepsWhatItDoesNotChange: comments, key order, quoting, empty
// documents, separators and sequence indentation survive; only the fields
// of the patch change. The expected output is spelled out in full.
func TestMutateKeepsWhatItDoesNotChange(t *testing.T) {
	t.Parallel()
	in := `# Generated by hand.
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web # the web tier
  namespace: apps
  annotations:
    note: 'single quoted'
spec:
  template:
    spec:
      # main container
      containers:
      - name: app
        image: "nginx:1.27" # pinned
        ports:
        - containerPort: 80
---
---
apiVersion: v1
kind: ConfigMap
metadata:
    name:   untouched   # odd spacing stays
data:
    z: "1"
    a: two
---
`
	want := `# Generated by hand.
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web # the web tier
  namespace: apps
  annotations:
    note: 'single quoted'
spec:
  template:
    spec:
      # main container
      containers:
      - name: app
        image: "registry.example.com/mirror/nginx:1.27" # pinned
        ports:
        - containerPort: 80
---
---
apiVersion: v1
kind: ConfigMap
metadata:
    name:   untouched   # odd spacing stays
data:
    z: "1"
    a: two
---
`
	cfg := config.Env{Registry: mirror, ImagePullPolicyToForce: "Always"}
	res, out := mutate(t, cfg, []byte(in))
	if string(out) != want {
		t.Errorf("output differs from what it should be:\n--- got\n%s\n--- want\n%s", out, want)
	}
	if res.Documents != 2 || res.Changed != 1 {
		t.Errorf("Documents, Changed = %d, %d; want 2, 1", res.Documents, res.Changed)
	}
}

// TestChangesNameTheirObject: two Deployments with a container of the same
// name are told apart in the change list.
func TestChangesNameTheirObject(t *testing.T) {
	t.Parallel()
	in := `apiVersion: apps/v1
kind: Deployment
metadata: {name: a, namespace: argocd}
spec: {template: {spec: {initContainers: [{name: copyutil, image: quay.io/argoproj/argocd:v2}], containers: [{name: x, image: mirror.example.com/x}]}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: b, namespace: argocd}
spec: {template: {spec: {initContainers: [{name: copyutil, image: quay.io/argoproj/argocd:v2}], containers: [{name: x, image: mirror.example.com/x}]}}}
`
	cfg := config.Env{Registry: mirror, ImagePullPolicyToForce: "Always", IgnoredRegistries: []string{"mirror.example.com"}}
	res, _ := mutate(t, cfg, []byte(in))
	var got []string
	for _, c := range res.Changes {
		got = append(got, c.String())
	}
	want := []string{
		`Deployment argocd/a: image "quay.io/argoproj/argocd:v2" became "registry.example.com/mirror/argoproj/argocd:v2" (init container "copyutil")`,
		`Deployment argocd/b: image "quay.io/argoproj/argocd:v2" became "registry.example.com/mirror/argoproj/argocd:v2" (init container "copyutil")`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("changes\n%q\nwant\n%q", got, want)
	}
}
