// Package manifests applies the webhook's rules to manifests on disk, so that
// users can preview in CI what the webhook will do to their workloads. It uses
// the same rules and the same JSON patch application as the API server.
package manifests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

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

// New builds a Mutator from a validated configuration.
func New(cfg config.Config) (*Mutator, error) {
	rules, err := mutation.New(cfg)
	if err != nil {
		return nil, err
	}
	return &Mutator{rules: rules, excluded: cfg.Excluded}, nil
}

// Result counts what Mutate did.
type Result struct {
	Documents int
	Changed   int
	Changes   []mutation.Change
	// Problems are images the webhook would refuse the object for (no
	// allowed registry can serve them); the documents are written as they
	// are.
	Problems []mutation.Problem
}

// Mutate reads YAML (several documents) or JSON manifests from in and writes
// them to out in the same format, mutated as the webhook would mutate them
// on CREATE. Kinds the webhook does not touch pass through unchanged.
func (m *Mutator) Mutate(in io.Reader, out io.Writer) (Result, error) {
	var res Result
	br := bufio.NewReader(in)
	isJSON := startsWithJSON(br)
	reader := utilyaml.NewYAMLReader(br)
	first := true
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return res, nil
		}
		if err != nil {
			return res, fmt.Errorf("reading document %d: %w", res.Documents+1, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 || isComment(doc) {
			continue
		}
		res.Documents++
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return res, fmt.Errorf("document %d: %w", res.Documents, err)
		}
		mutated, changes, problems, err := m.document(js)
		if err != nil {
			return res, fmt.Errorf("document %d: %w", res.Documents, err)
		}
		res.Problems = append(res.Problems, problems...)
		if len(changes) > 0 {
			res.Changed++
			res.Changes = append(res.Changes, changes...)
		}
		if err := write(out, doc, mutated, len(changes) > 0, isJSON, first); err != nil {
			return res, err
		}
		first = false
	}
}

// document mutates one object (or each item of a v1 List).
func (m *Mutator) document(js []byte) ([]byte, []mutation.Change, []mutation.Problem, error) {
	var head struct {
		Kind     string            `json:"kind"`
		Metadata mutation.Metadata `json:"metadata"`
		Items    []json.RawMessage `json:"items"`
	}
	if err := mutation.Decode(js, &head, "object"); err != nil {
		return nil, nil, nil, fmt.Errorf("not a Kubernetes object: %w", err)
	}
	if head.Kind == "List" || strings.HasSuffix(head.Kind, "List") && head.Items != nil {
		return m.list(js, head.Items)
	}
	if m.excluded(head.Metadata.Namespace) {
		return js, nil, nil, nil
	}
	var (
		changes  []mutation.Change
		problems []mutation.Problem
	)
	if head.Kind == "PersistentVolumeClaim" {
		var pvc mutation.PVC
		if err := mutation.Decode(js, &pvc, "PersistentVolumeClaim"); err != nil {
			return nil, nil, nil, err
		}
		changes = m.rules.PVCOnCreate(&pvc)
	} else if path, ok := podSpecPaths[head.Kind]; ok {
		spec, err := podSpecAt(js, path)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("decoding %s: %w", head.Kind, err)
		}
		if spec == nil {
			return js, nil, nil, nil
		}
		changes, problems = m.rules.PodSpecOnCreate("/"+strings.Join(path, "/"), spec)
	}
	if len(changes) == 0 {
		return js, nil, problems, nil
	}
	patched, err := apply(js, changes)
	return patched, changes, problems, err
}

func (m *Mutator) list(js []byte, items []json.RawMessage) ([]byte, []mutation.Change, []mutation.Problem, error) {
	var (
		all      []mutation.Change
		problems []mutation.Problem
	)
	out := make([]json.RawMessage, len(items))
	for i, item := range items {
		mutated, changes, p, err := m.document(item)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("item %d: %w", i, err)
		}
		out[i] = mutated
		all = append(all, changes...)
		problems = append(problems, p...)
	}
	if len(all) == 0 {
		return js, nil, problems, nil
	}
	var list map[string]json.RawMessage
	if err := json.Unmarshal(js, &list); err != nil {
		return nil, nil, nil, err
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, nil, nil, err
	}
	list["items"] = b
	js, err = json.Marshal(list)
	return js, all, problems, err
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

// apply applies the changes with the same JSON patch library the API server
// uses for webhook patches.
func apply(js []byte, changes []mutation.Change) ([]byte, error) {
	p, err := mutation.Patch(changes)
	if err != nil {
		return nil, err
	}
	patch, err := jsonpatch.DecodePatch(p)
	if err != nil {
		return nil, fmt.Errorf("decoding patch: %w", err)
	}
	out, err := patch.Apply(js)
	if err != nil {
		return nil, fmt.Errorf("applying patch: %w", err)
	}
	return out, nil
}

// write prints one document. Unchanged YAML documents are written byte for
// byte, so comments and key order survive where nothing changed.
func write(out io.Writer, original, mutated []byte, changed, isJSON, first bool) error {
	var b []byte
	switch {
	case isJSON:
		var buf bytes.Buffer
		if err := json.Indent(&buf, mutated, "", "  "); err != nil {
			return fmt.Errorf("formatting JSON: %w", err)
		}
		buf.WriteByte('\n')
		b = buf.Bytes()
	case !changed:
		b = bytes.TrimLeft(original, "\n")
		if !first {
			b = append([]byte("---\n"), b...)
		}
	default:
		y, err := yaml.JSONToYAML(mutated)
		if err != nil {
			return fmt.Errorf("formatting YAML: %w", err)
		}
		if !first {
			y = append([]byte("---\n"), y...)
		}
		b = y
	}
	if _, err := out.Write(b); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

func startsWithJSON(br *bufio.Reader) bool {
	for i := 1; ; i++ {
		b, err := br.Peek(i)
		if err != nil || len(b) < i {
			return false
		}
		switch b[i-1] {
		case ' ', '\t', '\r', '\n':
			continue
		case '{', '[':
			return true
		default:
			return false
		}
	}
}

func isComment(doc []byte) bool {
	for _, line := range bytes.Split(doc, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' {
			return false
		}
	}
	return true
}
