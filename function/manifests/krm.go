package manifests

import (
	"errors"
	"fmt"
	"io"

	"sigs.k8s.io/kustomize/kyaml/fn/framework"
	"sigs.k8s.io/kustomize/kyaml/kio"
	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// ErrRefused is returned (wrapped) when the webhook would refuse some
// object; the output is written all the same.
var ErrRefused = errors.New("the webhook would refuse some objects")

// ResourceList runs the rules as a KRM function
// (https://kpt.dev/book/05-developing-functions/): a ResourceList on in, the
// same ResourceList with its items mutated on out, every change as an info
// result and every refused image as an error result, so that kustomize or
// kpt can run the preview in a pipeline. It returns ErrRefused when an item
// would be refused.
func (m *Mutator) ResourceList(in io.Reader, out io.Writer) error {
	refused := false
	err := framework.Execute(framework.ResourceListProcessorFunc(func(rl *framework.ResourceList) error {
		for _, item := range rl.Items {
			js, err := item.MarshalJSON()
			if err != nil {
				return fmt.Errorf("encoding %s: %w", describeNode(item), err)
			}
			d, err := m.decide(js)
			if err != nil {
				return fmt.Errorf("%s: %w", describeNode(item), err)
			}
			if len(d.changes) > 0 {
				if err := applyToNode(item, d.patch); err != nil {
					return fmt.Errorf("%s: %w", describeNode(item), err)
				}
			}
			ref := resourceRef(item)
			for _, c := range d.changes {
				rl.Results = append(rl.Results, &framework.Result{Message: "mutator: " + c.Describe(false), Severity: framework.Info, ResourceRef: ref,
					Field: &framework.Field{Path: c.Path, CurrentValue: c.From, ProposedValue: c.To}})
			}
			for _, p := range d.problems {
				refused = true
				rl.Results = append(rl.Results, &framework.Result{Message: "mutator: would deny: " + p.Problem.String(), Severity: framework.Error, ResourceRef: ref})
			}
		}
		return nil
	}), &kio.ByteReadWriter{Reader: in, Writer: out, KeepReaderAnnotations: true})
	if err != nil {
		return err
	}
	if refused {
		return ErrRefused
	}
	return nil
}

func resourceRef(n *yaml.RNode) *yaml.ResourceIdentifier {
	return &yaml.ResourceIdentifier{
		TypeMeta: yaml.TypeMeta{APIVersion: n.GetApiVersion(), Kind: n.GetKind()},
		NameMeta: yaml.NameMeta{Name: n.GetName(), Namespace: n.GetNamespace()},
	}
}

func describeNode(n *yaml.RNode) string {
	name := n.GetName()
	if ns := n.GetNamespace(); ns != "" {
		name = ns + "/" + name
	}
	return n.GetKind() + " " + name
}
