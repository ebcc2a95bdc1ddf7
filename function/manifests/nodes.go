package manifests

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// applyYAML applies a JSON patch to one YAML document in place, with
// sigs.k8s.io/kustomize/kyaml: the nodes the patch does not name keep their
// comments, order, quoting and style, and sequences keep their indentation
// style. Only the indentation of mappings is normalised, to two spaces.
func applyYAML(doc string, patch []byte) (string, error) {
	rn, err := yaml.Parse(doc)
	if err != nil {
		return "", fmt.Errorf("parsing YAML: %w", err)
	}
	if err := applyToNode(rn, patch); err != nil {
		return "", err
	}
	out, err := yaml.MarshalWithOptions(rn.Document(), &yaml.EncoderOptions{
		SeqIndent: yaml.SequenceIndentStyle(yaml.DeriveSeqIndentStyle(doc)),
	})
	if err != nil {
		return "", fmt.Errorf("formatting YAML: %w", err)
	}
	return string(out), nil
}

// operation is one RFC 6902 operation of the patches mutation.Patch makes:
// "add" and "replace" only.
type operation struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value"`
}

// applyToNode applies a JSON patch of "add" and "replace" operations to a
// YAML node.
func applyToNode(rn *yaml.RNode, patch []byte) error {
	var ops []operation
	if err := json.Unmarshal(patch, &ops); err != nil {
		return fmt.Errorf("decoding patch: %w", err)
	}
	for _, op := range ops {
		if err := applyOp(rn, op); err != nil {
			return fmt.Errorf("%s %s: %w", op.Op, op.Path, err)
		}
	}
	return nil
}

func applyOp(root *yaml.RNode, op operation) error {
	if op.Op != "add" && op.Op != "replace" {
		return fmt.Errorf("unsupported operation %q", op.Op)
	}
	tokens, err := pointer(op.Path)
	if err != nil {
		return err
	}
	parent := root
	for _, tok := range tokens[:len(tokens)-1] {
		if parent, err = child(parent, tok); err != nil {
			return err
		}
	}
	last := tokens[len(tokens)-1]
	value, err := valueNode(op.Value)
	if err != nil {
		return err
	}
	switch parent.YNode().Kind {
	case yaml.MappingNode:
		if existing := parent.Field(last); existing != nil && existing.Value.YNode().Kind == yaml.ScalarNode && value.YNode().Kind == yaml.ScalarNode {
			// Keep the scalar's style (quotes) and comments.
			existing.Value.YNode().Value = value.YNode().Value
			return nil
		}
		if op.Op == "replace" && parent.Field(last) == nil {
			return fmt.Errorf("no member %q to replace", last)
		}
		return parent.PipeE(yaml.SetField(last, value))
	case yaml.SequenceNode:
		n := parent.YNode()
		if last == "-" && op.Op == "add" {
			n.Content = append(n.Content, value.YNode())
			return nil
		}
		i, err := strconv.Atoi(last)
		if err != nil || i < 0 || i >= len(n.Content) {
			return fmt.Errorf("no element %q", last)
		}
		if op.Op == "replace" {
			n.Content[i] = value.YNode()
		} else {
			n.Content = append(n.Content[:i], append([]*yaml.Node{value.YNode()}, n.Content[i:]...)...)
		}
		return nil
	}
	return fmt.Errorf("%q is not in a mapping or a sequence", last)
}

// child steps from node to its member or element tok.
func child(node *yaml.RNode, tok string) (*yaml.RNode, error) {
	switch node.YNode().Kind {
	case yaml.MappingNode:
		if f := node.Field(tok); f != nil {
			return f.Value, nil
		}
	case yaml.SequenceNode:
		if i, err := strconv.Atoi(tok); err == nil && i >= 0 && i < len(node.YNode().Content) {
			return yaml.NewRNode(node.YNode().Content[i]), nil
		}
	}
	return nil, fmt.Errorf("no %q", tok)
}

// pointer splits an RFC 6901 JSON pointer into its unescaped tokens.
func pointer(p string) ([]string, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("%q is not a JSON pointer", p)
	}
	tokens := strings.Split(p[1:], "/")
	for i, t := range tokens {
		tokens[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return tokens, nil
}

// valueNode turns a patch value (JSON) into a block-style YAML node.
func valueNode(raw json.RawMessage) (*yaml.RNode, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return yaml.NewStringRNode(s), nil
	}
	rn, err := yaml.Parse(string(raw))
	if err != nil {
		return nil, fmt.Errorf("patch value %s: %w", raw, err)
	}
	blockStyle(rn.YNode())
	return rn, nil
}

// blockStyle clears the flow and quoting styles that parsing JSON leaves,
// so that values read like the YAML around them.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}
