// Package manifests applies the webhook's rules to manifests on disk, so that
// users can preview in CI what the webhook will do to their workloads. It
// decides with the same rules as the webhook and changes only the fields
// the webhook's patch names: in YAML everything else (comments, key order,
// quoting, empty documents and separators) stays as written.
package manifests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/mutation"
)

// podSpecPaths says where each workload kind keeps its pod spec.
var podSpecPaths = map[string][]string{
	"Pod":                   {"spec"},
	"Deployment":            {"spec", "template", "spec"},
	"StatefulSet":           {"spec", "template", "spec"},
	"DaemonSet":             {"spec", "template", "spec"},
	"ReplicaSet":            {"spec", "template", "spec"},
	"ReplicationController": {"spec", "template", "spec"},
	"Job":                   {"spec", "template", "spec"},
	"CronJob":               {"spec", "jobTemplate", "spec", "template", "spec"},
}

// Mutator rewrites manifests.
type Mutator struct {
	rules    *mutation.Rules
	excluded func(string) bool
}

// New builds a Mutator from the parsed rules; review's EXCLUDE_NAMESPACES
// leaves objects of those namespaces alone, as the webhook does.
func New(rules mutation.Options, review config.Review) *Mutator {
	return &Mutator{rules: mutation.New(rules), excluded: review.Excluded}
}

// Change is one change, with the object it belongs to.
type Change struct {
	Object string // e.g. "Deployment apps/api"
	mutation.Change
}

func (c Change) String() string { return c.Object + ": " + c.Describe(false) }

// Problem is an image the webhook would refuse the object for, with the
// object.
type Problem struct {
	Object string
	mutation.Problem
}

func (p Problem) String() string { return p.Object + ": " + p.Problem.String() }

// Result counts what Mutate did.
type Result struct {
	Documents int
	Changed   int
	Changes   []Change
	// Problems are images the webhook would refuse the object for (no
	// allowed registry can serve them); the documents are written as they
	// are.
	Problems []Problem
}

func (r *Result) add(d decided) {
	r.Documents++
	if len(d.changes) > 0 {
		r.Changed++
	}
	r.Changes = append(r.Changes, d.changes...)
	r.Problems = append(r.Problems, d.problems...)
}

// Mutate reads YAML (several documents) or JSON manifests from in and writes
// them to out in the same format, mutated as the webhook would mutate them
// on CREATE. Kinds the webhook does not touch pass through unchanged.
func (m *Mutator) Mutate(in io.Reader, out io.Writer) (Result, error) {
	data, err := io.ReadAll(in)
	if err != nil {
		return Result{}, fmt.Errorf("reading manifests: %w", err)
	}
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		return m.mutateJSON(data, out)
	}
	return m.mutateYAML(data, out)
}

func (m *Mutator) mutateJSON(data []byte, out io.Writer) (Result, error) {
	var res Result
	d, err := m.decide(data)
	if err != nil {
		return res, fmt.Errorf("document 1: %w", err)
	}
	res.add(d)
	js := data
	if len(d.changes) > 0 {
		if js, err = applyJSON(data, d.patch); err != nil {
			return res, fmt.Errorf("document 1: %w", err)
		}
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, js, "", "  "); err != nil {
		return res, fmt.Errorf("formatting JSON: %w", err)
	}
	buf.WriteByte('\n')
	if _, err := out.Write(buf.Bytes()); err != nil {
		return res, fmt.Errorf("writing output: %w", err)
	}
	return res, nil
}

func (m *Mutator) mutateYAML(data []byte, out io.Writer) (Result, error) {
	var res Result
	for _, seg := range splitDocuments(data) {
		text := seg.body
		if isBlank(seg.body) {
			if err := write(out, seg.separator, text); err != nil {
				return res, err
			}
			continue
		}
		js, err := sigsyaml.YAMLToJSON([]byte(seg.body))
		if err != nil {
			return res, fmt.Errorf("document %d: %w", res.Documents+1, err)
		}
		d, err := m.decide(js)
		if err != nil {
			return res, fmt.Errorf("document %d: %w", res.Documents+1, err)
		}
		res.add(d)
		if len(d.changes) > 0 {
			if text, err = applyYAML(seg.body, d.patch); err != nil {
				return res, fmt.Errorf("document %d: %w", res.Documents, err)
			}
		}
		if err := write(out, seg.separator, text); err != nil {
			return res, err
		}
	}
	return res, nil
}

func write(out io.Writer, parts ...string) error {
	for _, p := range parts {
		if _, err := io.WriteString(out, p); err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
	}
	return nil
}

// decided is what the rules make of one document.
type decided struct {
	changes  []Change
	problems []Problem
	patch    []byte // RFC 6902, over the whole document; nil without changes
}

// decide runs the rules on one object (or each item of a v1 List).
func (m *Mutator) decide(js []byte) (decided, error) {
	changes, problems, err := m.object(js, "")
	if err != nil {
		return decided{}, err
	}
	d := decided{changes: changes, problems: problems}
	if len(changes) > 0 {
		plain := make([]mutation.Change, len(changes))
		for i, c := range changes {
			plain[i] = c.Change
		}
		if d.patch, err = mutation.Patch(plain); err != nil {
			return decided{}, err
		}
	}
	return d, nil
}

// object returns the changes for one object, their paths under prefix (the
// object's pointer in the document).
func (m *Mutator) object(js []byte, prefix string) ([]Change, []Problem, error) {
	var head struct {
		Kind     string            `json:"kind"`
		Metadata mutation.Metadata `json:"metadata"`
		Items    []json.RawMessage `json:"items"`
	}
	if err := mutation.Decode(js, &head, "object"); err != nil {
		return nil, nil, fmt.Errorf("not a Kubernetes object: %w", err)
	}
	if head.Kind == "List" || strings.HasSuffix(head.Kind, "List") && head.Items != nil {
		var changes []Change
		var problems []Problem
		for i, item := range head.Items {
			c, p, err := m.object(item, prefix+"/items/"+strconv.Itoa(i))
			if err != nil {
				return nil, nil, fmt.Errorf("item %d: %w", i, err)
			}
			changes, problems = append(changes, c...), append(problems, p...)
		}
		return changes, problems, nil
	}
	if m.excluded(head.Metadata.Namespace) {
		return nil, nil, nil
	}
	name := objectName(head.Kind, head.Metadata)
	var (
		changes  []mutation.Change
		problems []mutation.Problem
	)
	if head.Kind == "PersistentVolumeClaim" {
		var pvc mutation.PVC
		if err := mutation.Decode(js, &pvc, "PersistentVolumeClaim"); err != nil {
			return nil, nil, err
		}
		changes = m.rules.PVCOnCreate(&pvc)
	} else if path, ok := podSpecPaths[head.Kind]; ok {
		spec, err := podSpecAt(js, path)
		if err != nil {
			return nil, nil, fmt.Errorf("decoding %s: %w", head.Kind, err)
		}
		if spec == nil {
			return nil, nil, nil
		}
		changes, problems = m.rules.PodSpecOnCreate("/"+strings.Join(path, "/"), spec)
	}
	out := make([]Change, len(changes))
	for i, c := range changes {
		c.Path = prefix + c.Path
		out[i] = Change{Object: name, Change: c}
	}
	refused := make([]Problem, len(problems))
	for i, p := range problems {
		refused[i] = Problem{Object: name, Problem: p}
	}
	return out, refused, nil
}

// objectName names an object the way kubectl does: kind, namespace/name.
func objectName(kind string, meta mutation.Metadata) string {
	name := meta.Name
	if name == "" && meta.GenerateName != "" {
		name = meta.GenerateName + "*"
	}
	if meta.Namespace != "" {
		name = meta.Namespace + "/" + name
	}
	return kind + " " + name
}

// podSpecAt decodes the pod spec at path; nil when the manifest has none.
// Members are matched case-sensitively, as the API server matches them.
func podSpecAt(js []byte, path []string) (*mutation.PodSpec, error) {
	raw := json.RawMessage(js)
	for _, key := range path {
		var obj map[string]json.RawMessage
		if err := mutation.Decode(raw, &obj, key); err != nil {
			return nil, err
		}
		next, ok := obj[key]
		if !ok || string(next) == "null" {
			return nil, nil
		}
		raw = next
	}
	var spec mutation.PodSpec
	if err := mutation.Decode(raw, &spec, "pod spec"); err != nil {
		return nil, err
	}
	return &spec, nil
}

// applyJSON applies the patch with the JSON patch library the API server
// uses for webhook patches.
func applyJSON(js, patch []byte) ([]byte, error) {
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		return nil, fmt.Errorf("decoding patch: %w", err)
	}
	out, err := p.Apply(js)
	if err != nil {
		return nil, fmt.Errorf("applying patch: %w", err)
	}
	return out, nil
}

// segment is one YAML document as written: the separator line that starts
// it ("" for the first) and its text.
type segment struct{ separator, body string }

// splitDocuments cuts a YAML stream at its "---" lines, keeping every byte:
// joining the segments gives the input back.
func splitDocuments(data []byte) []segment {
	var segs []segment
	cur := segment{}
	var body strings.Builder
	for line := range strings.Lines(string(data)) {
		if isSeparator(line) {
			cur.body = body.String()
			segs = append(segs, cur)
			cur, body = segment{separator: line}, strings.Builder{}
			continue
		}
		body.WriteString(line)
	}
	cur.body = body.String()
	return append(segs, cur)
}

// isSeparator reports whether line starts a new YAML document: "---" alone
// or followed by white space or a comment.
func isSeparator(line string) bool {
	rest, ok := strings.CutPrefix(line, "---")
	return ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t' || rest[0] == '\n' || rest[0] == '\r' || rest[0] == '#')
}

// isBlank reports whether a document holds nothing but white space and
// comments.
func isBlank(doc string) bool {
	for line := range strings.Lines(doc) {
		if line = strings.TrimSpace(line); line != "" && line[0] != '#' {
			return false
		}
	}
	return true
}
