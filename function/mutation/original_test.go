package mutation_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/mutation"
	"github.com/mutator-dev/mutator/internal/testkit"
)

// recording rewrites to mirror and records the original images; no
// forced policy, no pull secret.
func recording() config.Env {
	return config.Env{Registry: mirror, RecordOriginalImages: true}
}

// originalsOf returns the annotation of a patched Pod document, and
// whether it is there.
func originalsOf(t *testing.T, doc []byte) (string, bool) {
	t.Helper()
	var pod corev1.Pod
	testkit.DecodeStrict(t, doc, &pod)
	v, ok := pod.Annotations[mutation.OriginalImagesAnnotation]
	return v, ok
}

func TestOriginalImagesOnCreate(t *testing.T) {
	t.Parallel()
	const spec = `{"initContainers":[{"name":"init","image":"busybox"}],
		"containers":[{"name":"app","image":"nginx:1"},{"name":"kept","image":"` + mirror + `/x:1"},{"name":"local","image":"local:1","imagePullPolicy":"Never"}],
		"ephemeralContainers":[{"name":"debug","image":"ghcr.io/o/debug:1"}],
		"volumes":[{"name":"cm","configMap":{"name":"c"}},{"name":"data","image":{"reference":"quay.io/o/data:1"}}]}`
	const all = `{"initContainers/init":"busybox","containers/app":"nginx:1","ephemeralContainers/debug":"ghcr.io/o/debug:1","volumes/data":"quay.io/o/data:1"}`
	tests := []struct {
		name     string
		cfg      config.Env
		metadata string // "" for none
		spec     string
		want     string // "" for no annotation
		path     string // the change's path
		others   map[string]string
	}{
		{"no annotations yet", recording(), `{"name":"p","namespace":"ns"}`, spec, all, "/metadata/annotations", nil},
		{"null annotations", recording(), `{"name":"p","annotations":null}`, spec, all, "/metadata/annotations", nil},
		{"other annotations are kept", recording(), `{"name":"p","annotations":{"a/b":"1","c":"2"}}`, spec, all,
			"/metadata/annotations/mutator.dev~1original-images", map[string]string{"a/b": "1", "c": "2"}},
		{"no metadata at all", recording(), "", spec, all, "/metadata", nil},
		{"an author's value is replaced on CREATE", recording(),
			`{"name":"p","annotations":{"mutator.dev/original-images":"{\"containers/app\":\"forged\",\"containers/other\":\"x\"}"}}`, spec, all,
			"/metadata/annotations/mutator.dev~1original-images", nil},
		{"nothing rewritten: no annotation", recording(), `{"name":"p"}`,
			`{"containers":[{"name":"kept","image":"` + mirror + `/x:1"},{"name":"local","image":"nginx","imagePullPolicy":"Never"}]}`, "", "", nil},
		{"off: no annotation", with(func(c *config.Env) { c.RecordOriginalImages = false }), `{"name":"p"}`, spec, "", "", nil},
		{"a refused image is not recorded", recording(), `{"name":"p"}`,
			`{"containers":[{"name":"long","image":"evil.example.com/` + strings.Repeat("a", 250) + `"},{"name":"app","image":"nginx:1"}]}`,
			`{"containers/app":"nginx:1"}`, "/metadata/annotations", nil},
		{"JSON escapes", recording(), `{"name":"p"}`, `{"containers":[{"name":"a\"b\\c<","image":"nginx:1"}]}`,
			`{"containers/a\"b\\c<":"nginx:1"}`, "/metadata/annotations", nil},
		{"duplicate names: the first", recording(), `{"name":"p"}`, `{"containers":[{"name":"a","image":"nginx:1"},{"name":"a","image":"nginx:2"}]}`,
			`{"containers/a":"nginx:1"}`, "/metadata/annotations", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules := newRules(t, tt.cfg)
			doc := []byte(`{"apiVersion":"v1","kind":"Pod","spec":` + tt.spec + `}`)
			if tt.metadata != "" {
				doc = []byte(`{"apiVersion":"v1","kind":"Pod","metadata":` + tt.metadata + `,"spec":` + tt.spec + `}`)
			}
			changes, _ := rules.PodSpecOnCreate("/spec", specOf(t, doc))
			var annotation []mutation.Change
			for _, c := range changes {
				if c.Kind == mutation.KindAnnotation {
					annotation = append(annotation, c)
				}
			}
			patched := applyChanges(t, doc, changes)
			got, ok := originalsOf(t, patched)
			if tt.want == "" {
				if len(annotation) != 0 || (ok && !strings.Contains(tt.metadata, "original-images")) {
					t.Errorf("annotation changes %+v, value %q; want none", annotation, got)
				}
				return
			}
			if len(annotation) != 1 {
				t.Fatalf("annotation changes %+v, want one", annotation)
			}
			if c := annotation[0]; c.Path != tt.path || c.To != tt.want || changes[len(changes)-1].Kind != mutation.KindAnnotation {
				t.Errorf("change %+v, want the last one, at %s, to %s", c, tt.path, tt.want)
			}
			if got != tt.want {
				t.Errorf("annotation %s, want %s", got, tt.want)
			}
			if !json.Valid([]byte(got)) {
				t.Errorf("annotation %q is not JSON", got)
			}
			var pod corev1.Pod
			testkit.DecodeStrict(t, patched, &pod)
			for k, v := range tt.others {
				if pod.Annotations[k] != v {
					t.Errorf("annotation %s = %q, want %q", k, pod.Annotations[k], v)
				}
			}
			// Idempotent: nothing is rewritten the second time, so nothing
			// is recorded either.
			if again, _ := rules.PodSpecOnCreate("/spec", specOf(t, patched)); len(again) != 0 {
				t.Errorf("second pass changes %+v", again)
			}
		})
	}
}

func TestOriginalImagesOnUpdate(t *testing.T) {
	t.Parallel()
	const old = `{"containers":[{"name":"app","image":"` + mirror + `/nginx:1"},{"name":"side","image":"` + mirror + `/redis:6"}]}`
	const debug = `{"containers":[{"name":"app","image":"` + mirror + `/nginx:1"},{"name":"side","image":"` + mirror + `/redis:6"}],` +
		`"ephemeralContainers":[{"name":"debug","image":"busybox:1"}]}`
	const setImage = `{"containers":[{"name":"app","image":"nginx:2"},{"name":"side","image":"` + mirror + `/redis:6"}]}`
	// An UPDATE that changes the image of a container the annotation
	// does not record yet (one created under the mirror's name).
	const setImage2 = `{"containers":[{"name":"app","image":"` + mirror + `/nginx:1"},{"name":"side","image":"redis:7"}]}`
	meta := func(value string) string {
		b, _ := json.Marshal(value)
		return `{"name":"p","annotations":{"other":"x","mutator.dev/original-images":` + string(b) + `}}`
	}
	tests := []struct {
		name, metadata, spec, want string
	}{
		{"merged: a new key follows", meta(`{"containers/app":"nginx:1"}`), setImage2,
			`{"containers/app":"nginx:1","containers/side":"redis:7"}`},
		{"merged: a key recorded again takes its new image in place", meta(`{"containers/app":"nginx:1","volumes/v":"d:1"}`), setImage,
			`{"containers/app":"nginx:2","volumes/v":"d:1"}`},
		// The API server keeps nothing but spec.ephemeralContainers from the
		// ephemeralcontainers subresource: no annotation change is made.
		{"kubectl debug: not recorded", meta(`{"containers/app":"nginx:1"}`), debug, `{"containers/app":"nginx:1"}`},
		{"kubectl debug without an annotation: none", `{"name":"p"}`, debug, ""},
		{"no annotation yet", `{"name":"p"}`, setImage, `{"containers/app":"nginx:2"}`},
		{"an escaped name is the same annotation", `{"name":"p","annotations":{"mutator.dev\u002foriginal-images":"{\"containers/app\":\"nginx:1\"}"}}`, setImage2,
			`{"containers/app":"nginx:1","containers/side":"redis:7"}`},
		{"a malformed value is replaced", meta(`{"containers/app":1}`), setImage2, `{"containers/side":"redis:7"}`},
		{"a value that is no object is replaced", meta(`nginx`), setImage2, `{"containers/side":"redis:7"}`},
		{"trailing data is malformed", meta(`{"containers/app":"nginx:1"}{}`), setImage2, `{"containers/side":"redis:7"}`},
		{"the count of a cut value is carried", meta(`{"containers/app":"nginx:1","…":"3 more"}`), setImage2,
			`{"containers/app":"nginx:1","containers/side":"redis:7","…":"3 more"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules := newRules(t, recording())
			doc := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":` + tt.metadata + `,"spec":` + tt.spec + `}`)
			changes, _ := rules.PodSpecOnUpdate("/spec", specOf(t, doc), specOf(t, podJSON(old)))
			patched := applyChanges(t, doc, changes)
			if got, _ := originalsOf(t, patched); got != tt.want {
				t.Errorf("annotation %s, want %s (changes %+v)", got, tt.want, changes)
			}
			var pod corev1.Pod
			testkit.DecodeStrict(t, patched, &pod)
			if strings.Contains(tt.metadata, "other") && pod.Annotations["other"] != "x" {
				t.Errorf("other annotations changed: %v", pod.Annotations)
			}
			if again, _ := rules.PodSpecOnUpdate("/spec", specOf(t, patched), specOf(t, podJSON(old))); len(again) != 0 {
				t.Errorf("second pass changes %+v", again)
			}
		})
	}
}

// TestOriginalImagesBound: past MaxOriginalImagesBytes the entries are
// kept in order while they fit, and "…" counts the rest.
func TestOriginalImagesBound(t *testing.T) {
	t.Parallel()
	rules := newRules(t, recording())
	for _, n := range []int{10, 30, 34, 35, 40, 200} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var cs []string
			for i := range n {
				cs = append(cs, fmt.Sprintf(`{"name":"c%03d","image":"example.com/%s:%d"}`, i, strings.Repeat("x", 200), i))
			}
			doc := podJSON(`{"containers":[` + strings.Join(cs, ",") + `]}`)
			changes, _ := rules.PodSpecOnCreate("/spec", specOf(t, doc))
			got, _ := originalsOf(t, applyChanges(t, doc, changes))
			if len(got) > mutation.MaxOriginalImagesBytes {
				t.Fatalf("annotation of %d bytes, more than %d", len(got), mutation.MaxOriginalImagesBytes)
			}
			var m map[string]string
			if err := json.Unmarshal([]byte(got), &m); err != nil {
				t.Fatalf("annotation %q: %v", got, err)
			}
			kept := len(m)
			if more, ok := m[mutation.OriginalImagesMore]; ok {
				kept--
				if want := fmt.Sprintf("%d more", n-kept); more != want {
					t.Errorf("%q: %q, want %q", mutation.OriginalImagesMore, more, want)
				}
				if !strings.HasSuffix(got, `,"…":"`+more+`"}`) {
					t.Errorf("%q is not the last member of %s", mutation.OriginalImagesMore, got[len(got)-60:])
				}
			} else if kept != n {
				t.Errorf("%d entries of %d and no count", kept, n)
			}
			for i := range kept { // the first ones, in order
				key := fmt.Sprintf("containers/c%03d", i)
				if m[key] != fmt.Sprintf("example.com/%s:%d", strings.Repeat("x", 200), i) {
					t.Errorf("entry %s missing or wrong", key)
				}
			}
			if n >= 40 && kept == n {
				t.Errorf("%d entries of %d: not cut", kept, n)
			}
			if n <= 30 && kept != n {
				t.Errorf("%d entries of %d: they fit", kept, n)
			}
		})
	}
	t.Run("one entry past the bound", func(t *testing.T) {
		long := `{"containers":[{"name":"` + strings.Repeat("n", 9000) + `","image":"nginx"}]}`
		doc := podJSON(long)
		changes, _ := rules.PodSpecOnCreate("/spec", specOf(t, doc))
		if got, _ := originalsOf(t, applyChanges(t, doc, changes)); got != `{"…":"1 more"}` {
			t.Errorf("annotation %q", got)
		}
	})
}

// TestOriginalImagesOnlyForPods: a pod spec decoded on its own (a
// workload's template in `mutator mutate`) gets no annotation: the rules
// do not know its metadata.
func TestOriginalImagesOnlyForPods(t *testing.T) {
	t.Parallel()
	rules := newRules(t, recording())
	var spec mutation.PodSpec
	if err := mutation.Decode([]byte(`{"containers":[{"name":"app","image":"nginx"}]}`), &spec, "pod spec"); err != nil {
		t.Fatal(err)
	}
	changes, _ := rules.PodSpecOnCreate("/spec/template/spec", &spec)
	if len(changes) != 1 || changes[0].Kind != mutation.KindImage {
		t.Errorf("changes %+v, want the image change alone", changes)
	}
}

// TestPodDecode: decoding a Pod reads its metadata as before, and rejects
// what it did (an annotation that is not a string).
func TestPodDecode(t *testing.T) {
	t.Parallel()
	var pod mutation.Pod
	doc := `{"metadata":{"name":"p","generateName":"g-","namespace":"ns","labels":{"a":"b"},"annotations":{"x":{"y":1},"z":"w"}},"spec":{"containers":[{"name":"app","image":"nginx"}]}}`
	if err := mutation.Decode([]byte(doc), &pod, "Pod"); err != nil {
		t.Fatal(err)
	}
	if pod.Metadata != (mutation.Metadata{Name: "p", GenerateName: "g-", Namespace: "ns"}) || len(pod.Spec.Containers) != 1 || pod.Spec.Containers[0].Image != "nginx" {
		t.Errorf("decoded %+v", pod)
	}
	for _, bad := range []string{
		`{"metadata":{"annotations":{"mutator.dev/original-images":1}}}`,
		`{"metadata":{"annotations":[]}}`,
		`{"metadata":{"annotations":{"a":"b"`,
		`{"spec":{"containers":3}}`,
	} {
		if err := mutation.Decode([]byte(bad), &pod, "Pod"); err == nil {
			t.Errorf("Decode(%s) succeeded", bad)
		}
	}
}
