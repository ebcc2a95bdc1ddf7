// Package policy turns the webhook's configuration into native admission
// policies: a MutatingAdmissionPolicy (admissionregistration.k8s.io/v1, GA
// and on by default in Kubernetes 1.36) that makes the webhook's changes
// with CEL inside the API server, and a ValidatingAdmissionPolicy that
// refuses what the webhook refuses. No network hop, no certificates, no
// availability to manage.
//
// Only configurations the policies reproduce exactly are turned into
// policies; for anything else Generate returns a *UnsupportedError naming each
// setting, never an approximation.
//
// Guard prints the validating part alone, for the webhook: the image
// guard, evaluated in the API server, refuses a Pod that would pull from a
// registry the configuration does not allow, so that provenance holds
// while the webhook is cold, down or unreachable, whatever its
// failurePolicy.
//
// NamespaceGuard prints the ValidatingAdmissionPolicy that both the
// webhook and these policies rely on: only administrators may exempt a
// namespace (the opt-out label, the names exempted by name).
package policy

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/images"
	"github.com/mutator-dev/mutator/function/mutation"
)

// The names of the objects Generate prints.
const (
	// PodPolicyName mutates Pod CREATEs, PodUpdatePolicyName UPDATEs of
	// Pods and of their ephemeral containers (see podPolicy for why two).
	PodPolicyName        = "mutator-pods"
	PodUpdatePolicyName  = "mutator-pod-updates"
	PVCPolicyName        = "mutator-pvcs"
	ProvenancePolicyName = "mutator-provenance"
	// GuardName names the image guard (Guard) and its binding: not
	// ProvenancePolicyName, so that applying one never replaces the other.
	GuardName = "mutator-image-guard"
)

// MirrorPodCondition is the matchCondition, shared with the webhook
// configurations in deploy/, that leaves mirror Pods alone: the kubelet
// creates one for each static Pod, and it must stay as the node's manifest
// says. The annotation alone is no proof (any Pod author can write it, and
// a node name), so only a node's request is skipped: the kubelet
// authenticates as system:node:<name>, a name the Node authorizer and
// NodeRestriction give a node's rights to.
const MirrorPodCondition = "!has(object.metadata.annotations) || !('kubernetes.io/config.mirror' in object.metadata.annotations) || " +
	"!request.userInfo.username.startsWith('system:node:')"

// ImagesChanged is true when an UPDATE of a Pod changes the image of a
// container, an init container or an ephemeral container (image volumes
// are immutable). The webhook configurations in deploy/ send the webhook
// only CREATEs and such UPDATEs (their matchCondition
// create-or-images-changed, there also restricted to Pods); the policies
// use the same expression, so that neither does more than evaluate it for
// a label-only UPDATE.
const ImagesChanged = "(has(object.spec.initContainers) ? object.spec.initContainers.map(c, c.image) : []) != " +
	"(has(oldObject.spec.initContainers) ? oldObject.spec.initContainers.map(c, c.image) : []) || " +
	"object.spec.containers.map(c, c.image) != oldObject.spec.containers.map(c, c.image) || " +
	"(has(object.spec.ephemeralContainers) ? object.spec.ephemeralContainers.map(c, c.image) : []) != " +
	"(has(oldObject.spec.ephemeralContainers) ? oldObject.spec.ephemeralContainers.map(c, c.image) : [])"

// IgnoreLabel is the namespace label that opts a namespace out, as in the
// webhook configurations of deploy/.
const IgnoreLabel = "mutator.dev/ignore"

// maxHostLength is the longest registry host (with its port) a rewrite may
// have: 253 characters of DNS name and ":65535". With a longer REGISTRY or
// map target, a rewrite could exceed images.MaxReferenceLength, which the
// webhook accepts but the policy's refusal check (run after the mutation)
// would refuse.
const maxHostLength = 253 + len(":65535")

// Set is what Generate prints: the policies the configuration needs and
// one binding for each. Unused members are nil.
type Set struct {
	Pods              *admissionregistrationv1.MutatingAdmissionPolicy
	PodsBinding       *admissionregistrationv1.MutatingAdmissionPolicyBinding
	PodUpdates        *admissionregistrationv1.MutatingAdmissionPolicy
	PodUpdatesBinding *admissionregistrationv1.MutatingAdmissionPolicyBinding
	PVCs              *admissionregistrationv1.MutatingAdmissionPolicy
	PVCsBinding       *admissionregistrationv1.MutatingAdmissionPolicyBinding
	Provenance        *admissionregistrationv1.ValidatingAdmissionPolicy
	ProvenanceBinding *admissionregistrationv1.ValidatingAdmissionPolicyBinding

	// header is the comment YAML starts with.
	header string
}

// Objects returns the members that are set, each policy before its binding.
func (s *Set) Objects() []any {
	var out []any
	if s.Pods != nil {
		out = append(out, s.Pods, s.PodsBinding)
	}
	if s.PodUpdates != nil {
		out = append(out, s.PodUpdates, s.PodUpdatesBinding)
	}
	if s.PVCs != nil {
		out = append(out, s.PVCs, s.PVCsBinding)
	}
	if s.Provenance != nil {
		out = append(out, s.Provenance, s.ProvenanceBinding)
	}
	return out
}

// YAML renders the set as a multi-document stream for kubectl apply -f -.
func (s *Set) YAML() ([]byte, error) {
	var b bytes.Buffer
	header := s.header
	if header == "" {
		header = "# Generated by `mutator policy` from the mutator configuration in the environment.\n"
	}
	b.WriteString(header)
	for _, o := range s.Objects() {
		y, err := yaml.Marshal(o)
		if err != nil {
			return nil, fmt.Errorf("encoding %T: %w", o, err)
		}
		b.WriteString("---\n")
		b.Write(y)
	}
	return b.Bytes(), nil
}

// UnsupportedError lists the settings a policy cannot reproduce exactly.
type UnsupportedError struct {
	Reasons []string
}

func (e *UnsupportedError) Error() string {
	return "the configuration cannot be expressed exactly as admission policies, so none is printed:\n  " +
		strings.Join(e.Reasons, "\n  ")
}

// ErrNothingToDo is returned for a configuration that sets no rule: the
// webhook would change nothing, and a MutatingAdmissionPolicy must have a
// mutation.
var ErrNothingToDo = errors.New("no rule is configured (REGISTRY, REGISTRY_MAP, IMAGE_PULL_SECRET, FORCE_IMAGE_PULL_POLICY and DEFAULT_STORAGE_CLASS are all unset): there is nothing to print")

// ErrNothingToGuard is returned by Guard for a configuration without image
// rules: the webhook leaves every registry alone, so there is nothing to
// refuse.
var ErrNothingToGuard = errors.New("no image rule is configured (REGISTRY and REGISTRY_MAP are unset): the webhook allows every registry, so there is nothing to guard")

// Options are the settings of the generated policies that are not in the
// mutator's configuration.
type Options struct {
	// Reinvocation is the reinvocationPolicy of the Pod policies: "" or
	// Never (the default), or IfNeeded. With Never, an image that a later
	// mutation (a sidecar injector's webhook) adds is refused by the
	// provenance policy; with IfNeeded the API server runs the Pod policy
	// again after such a mutation, and it rewrites the image. Both
	// evaluate the mutation once per request otherwise; IfNeeded costs two
	// more evaluations of matchConditions per create (see podPolicy).
	Reinvocation admissionregistrationv1.ReinvocationPolicyType
}

// Generate returns the policies that do what the webhook does with cfg, a
// validated configuration.
func Generate(cfg config.Config, opts Options) (*Set, error) {
	reinvocation := opts.Reinvocation
	switch reinvocation {
	case "":
		reinvocation = admissionregistrationv1.NeverReinvocationPolicy
	case admissionregistrationv1.NeverReinvocationPolicy, admissionregistrationv1.IfNeededReinvocationPolicy:
	default:
		return nil, fmt.Errorf("reinvocation policy %q: want %s or %s", reinvocation,
			admissionregistrationv1.NeverReinvocationPolicy, admissionregistrationv1.IfNeededReinvocationPolicy)
	}
	if err := refusals(cfg); err != nil {
		return nil, err
	}
	img := imageRules(cfg.Rules.Images)
	policy := ""
	if cfg.Rules.PullPolicy != "" {
		policy = string(cfg.Rules.PullPolicy)
	}
	consts, err := img.variables()
	if err != nil {
		return nil, err
	}
	scope := bindingScope(append([]string{"kube-system"}, cfg.Review.Exclude...))
	var s Set
	if img.enabled() || policy != "" || cfg.Rules.PullSecret != "" {
		s.Pods, s.PodsBinding = podPolicy(admissionregistrationv1.Create, cfg, img, consts, policy, reinvocation, scope)
	}
	if img.enabled() || policy != "" {
		// Pull secrets are immutable: an UPDATE has nothing else to change.
		s.PodUpdates, s.PodUpdatesBinding = podPolicy(admissionregistrationv1.Update, cfg, img, consts, policy, reinvocation, scope)
	}
	if cfg.Rules.StorageClass != "" {
		s.PVCs, s.PVCsBinding = pvcPolicy(cfg, scope)
	}
	if img.enabled() {
		// With IfNeeded the policies rewrite what a later mutation adds,
		// and an image left as written can only be one the Pod policy
		// could not reach (a later webhook that changed it again in the
		// API server's second and last round).
		later := "it was set after the " + PodPolicyName + " policy ran, by a later mutation (a sidecar injector?): " +
			"print the policies with --reinvocation=IfNeeded so that " + PodPolicyName + " runs again after it"
		if reinvocation == admissionregistrationv1.IfNeededReinvocationPolicy {
			later = "it was set by a mutation after " + PodPolicyName + "'s last run"
		}
		s.Provenance, s.ProvenanceBinding = provenancePolicy(ProvenancePolicyName, img, consts, scope, policy, later)
	}
	if s.Pods == nil && s.PVCs == nil {
		return nil, ErrNothingToDo
	}
	return &s, nil
}

// Guard returns the image guard for the webhook configured by cfg: the
// ValidatingAdmissionPolicy GuardName and its binding, which refuse a Pod
// (a CREATE, or an UPDATE that changes images, ephemeral containers
// included) that would pull an image the webhook would have rewritten or
// refused. It is the provenance policy of Generate, from the same code,
// with the webhook's scope: it skips every namespace the webhook
// configurations in deploy/ exempt (ExemptNamespaces), those of
// EXCLUDE_NAMESPACES, opted-out ones and mirror Pods from nodes.
//
// Everything the webhook admits passes it, rewritten or left alone (the
// rewrite is idempotent), and everything the webhook would refuse or
// rewrite fails it, so it changes nothing while the webhook answers and
// refuses, with the reason, what reaches the API server unrewritten when
// the webhook does not (failurePolicy Ignore, or a scaled-to-zero
// function the API server gave up on).
func Guard(cfg config.Config) (*Set, error) {
	if err := guardRefusals(cfg); err != nil {
		return nil, err
	}
	img := imageRules(cfg.Rules.Images)
	if !img.enabled() {
		return nil, ErrNothingToGuard
	}
	consts, err := img.variables()
	if err != nil {
		return nil, err
	}
	var s Set
	s.Provenance, s.ProvenanceBinding = provenancePolicy(GuardName, img, consts, bindingScope(ProtectedNamespaces(cfg, nil)), string(cfg.Rules.PullPolicy),
		"the mutator webhook did not rewrite this Pod: it may be cold, down or unreachable, and the Pod's controller will retry the create")
	s.header = guardHeader
	return &s, nil
}

const guardHeader = `# Generated by ` + "`mutator policy --guard`" + ` from the mutator configuration in the
# environment (see docs/policies.md); regenerate it rather than edit it.
#
# The image guard: the API server itself refuses a Pod that would pull an
# image the mutator webhook would have rewritten or refused, so that no Pod
# pulls from a registry the configuration does not allow while the webhook
# is cold, down or unreachable, whatever its failurePolicy. While the
# webhook answers it changes nothing: what the webhook admits passes it.
`

// refusals names the settings whose effect a policy cannot have. Settings
// of the server itself (ports, TLS, logging, garbage collector, body
// budget, certificates) have no meaning without a webhook and are ignored;
// so is METRICS_PORT: the API server's own admission metrics
// (apiserver_mutating_admission_policy_check_total and friends) take the
// place of the webhook's.
func refusals(cfg config.Config) error {
	var reasons []string
	if cfg.Review.Audit() {
		reasons = append(reasons, "MODE=audit: a MutatingAdmissionPolicy mutates or does nothing; it cannot answer with warnings of what it would change")
	}
	if cfg.Review.Warnings {
		reasons = append(reasons, "WARNINGS=true: a MutatingAdmissionPolicy cannot return a warning per change")
	}
	if cfg.Events.Sink != "" {
		reasons = append(reasons, "K_SINK: the API server sends no CloudEvents audit trail; use the API server's audit log instead")
	}
	if cfg.Mirror.Check {
		reasons = append(reasons, "MIRROR_CHECK=true: CEL cannot ask a registry whether the mirror has an image, so neither the check nor any MIRROR_* setting has an equivalent")
	}
	if cfg.Rules.RecordOriginal {
		reasons = append(reasons, "RECORD_ORIGINAL_IMAGES=true: the policies do not write the "+mutation.OriginalImagesAnnotation+
			" annotation (its merge and size bound are not ported to CEL); the API server's audit log at level Request records the images as written")
	}
	reasons = append(reasons, sharedRefusals(cfg)...)
	if len(reasons) > 0 {
		return &UnsupportedError{Reasons: reasons}
	}
	return nil
}

// guardRefusals names the settings under which the webhook admits images
// the guard would refuse. Warnings, K_SINK and the mirror check's other
// outcomes change nothing the webhook admits, so the guard has them.
func guardRefusals(cfg config.Config) error {
	var reasons []string
	if cfg.Review.Audit() {
		reasons = append(reasons, "MODE=audit: the webhook rewrites nothing, so the guard would refuse every Pod it admits")
	}
	if cfg.Mirror.Check && cfg.Mirror.Missing == config.MissingOriginal {
		reasons = append(reasons, "MIRROR_CHECK=true with MIRROR_MISSING=original: the webhook admits an image the mirror lacks as written, which the guard cannot tell from one it never saw")
	}
	reasons = append(reasons, sharedRefusals(cfg)...)
	if len(reasons) > 0 {
		return &UnsupportedError{Reasons: reasons}
	}
	return nil
}

// sharedRefusals are the refusals of both: a rewrite the webhook admits
// but the policies' check would refuse, and namespace names that no label
// selector can hold.
func sharedRefusals(cfg config.Config) []string {
	var reasons []string
	for _, t := range cfg.Rules.Images.Targets() {
		if host, _, _ := strings.Cut(t, "/"); len(host) > maxHostLength {
			reasons = append(reasons, fmt.Sprintf("registry host %s is longer than %d characters: a rewrite under it could be longer than any pullable reference, which the webhook admits but the policy's check would refuse", images.Quote(host), maxHostLength))
		}
	}
	for _, n := range cfg.Review.Exclude {
		// No namespace has such a name, but the bindings' namespaceSelector
		// cannot hold it, and the namespace guard refuses it too.
		if msgs := validation.IsDNS1123Label(n); len(msgs) > 0 {
			reasons = append(reasons, fmt.Sprintf("EXCLUDE_NAMESPACES: %s is not a namespace name: %s", images.Quote(n), strings.Join(msgs, "; ")))
		}
	}
	return reasons
}

// imageRules is the image plan in the form the expressions embed: the
// same data images.Compile builds the webhook's Rewriter from.
func imageRules(plan images.Plan) rules {
	r := rules{registry: plan.Registry, allowed: plan.AllowedPrefixes()}
	for _, rule := range plan.Map {
		if rule.Source == "*" {
			r.fallback = rule.Target
			continue
		}
		if r.bySource == nil {
			r.bySource = map[string]string{}
		}
		r.bySource[rule.Source] = rule.Target
	}
	return r
}

// variables are the image rules' constants as policy variables; none when
// the rules are off.
func (r rules) variables() ([]admissionregistrationv1.Variable, error) {
	if !r.enabled() {
		return nil, nil
	}
	c, err := r.constants()
	if err != nil {
		return nil, err
	}
	out := make([]admissionregistrationv1.Variable, 0, len(c))
	for _, kv := range c {
		out = append(out, admissionregistrationv1.Variable{Name: kv[0], Expression: kv[1]})
	}
	return out, nil
}

func variable(name string) string { return "variables." + name }

var (
	failClosed = admissionregistrationv1.Fail
	equivalent = admissionregistrationv1.Equivalent
	namespaced = admissionregistrationv1.NamespacedScope
)

// podRules match what the webhook configurations send the webhook for
// Pods, for the operations ops: CREATE and UPDATE of pods, and kubectl
// debug's UPDATE of pods/ephemeralcontainers.
func podRules(ops ...admissionregistrationv1.OperationType) *admissionregistrationv1.MatchResources {
	rule := func(ops []admissionregistrationv1.OperationType, resources ...string) admissionregistrationv1.NamedRuleWithOperations {
		return admissionregistrationv1.NamedRuleWithOperations{RuleWithOperations: admissionregistrationv1.RuleWithOperations{
			Operations: ops,
			Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: resources, Scope: &namespaced},
		}}
	}
	m := &admissionregistrationv1.MatchResources{MatchPolicy: &equivalent}
	if slices.Contains(ops, admissionregistrationv1.Update) {
		m.ResourceRules = []admissionregistrationv1.NamedRuleWithOperations{
			rule(ops, "pods"),
			rule([]admissionregistrationv1.OperationType{admissionregistrationv1.Update}, "pods/ephemeralcontainers"),
		}
	} else {
		m.ResourceRules = []admissionregistrationv1.NamedRuleWithOperations{rule(ops, "pods")}
	}
	return m
}

// bindingScope is the namespaceSelector of a binding: namespaces of the
// exempt names (sorted here, once each) and those labelled
// mutator.dev/ignore=true are left alone. The policies exempt kube-system
// and EXCLUDE_NAMESPACES (no webhook to keep reachable); the guard what the
// webhook configurations exempt too. Exempting by name in the selector
// rather than by a CEL condition costs the API server nothing per request
// (it matches namespace labels from its informer before any CEL runs), and
// is exact: kubernetes.io/metadata.name is the name, set by the API server.
func bindingScope(exempt []string) *admissionregistrationv1.MatchResources {
	names := slices.Clone(exempt)
	slices.Sort(names)
	names = slices.Compact(names)
	return &admissionregistrationv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
		MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: names},
			{Key: IgnoreLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"true"}},
		},
	}}
}

// The webhook configurations' matchConditions, for Pods: mirror Pods a
// node writes (MirrorPodCondition) and UPDATEs that change no image
// (ImagesChanged) are skipped, as the webhook is not called for them.
var (
	notAMirrorPod         = admissionregistrationv1.MatchCondition{Name: "not-a-mirror-pod", Expression: MirrorPodCondition}
	createOrImagesChanged = admissionregistrationv1.MatchCondition{Name: "create-or-images-changed", Expression: "request.operation != 'UPDATE' || " + ImagesChanged}
)

func labels() map[string]string {
	return map[string]string{"app.kubernetes.io/name": "mutator", "app.kubernetes.io/part-of": "mutator"}
}

func typeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: admissionregistrationv1.SchemeGroupVersion.String(), Kind: kind}
}

// str reads an optional string field as CEL: absent is "". The object's
// fields are dyn to the type checker; string() makes the result a string,
// as the homogeneous map literals of Kubernetes' CEL require.
func str(obj, field string) string {
	return "(has(" + obj + "." + field + ") ? string(" + obj + "." + field + ") : '')"
}

// list reads an optional list field: absent is [].
func list(obj, field string) string {
	return "(has(" + obj + "." + field + ") ? " + obj + "." + field + " : [])"
}

// containerLists are the Pod's lists of containers and how the webhook's
// messages name their members.
var containerLists = []struct{ field, words string }{
	{"initContainers", "init container"}, {"containers", "container"}, {"ephemeralContainers", "ephemeral container"},
}

// refsExpr is the variable "refs": every image reference of the Pod the
// webhook looks at (mutation.PodSpec.Images), one map(string, string) each
// with the JSON pointers of its image and pull policy, its description,
// image, pull policy and state: "new" (CREATE, or a container that the old
// object lacks), "changed" (its image differs from the old object's
// container of the same name in the same list) or "same". Image volumes are
// immutable and only looked at on CREATE. ops are the operations the
// policy matches: what the expression need not ask request.operation.
// The description ("where") is only built for the messages of the
// provenance policy (described): the mutating policies have no use for
// it, and each string built costs an evaluation step per container.
func refsExpr(ops operations, described bool) string {
	var parts []string
	for _, l := range containerLists {
		state := "'new'"
		if ops != creates {
			state = let("prev", list("oldObject.spec", l.field)+".filter(o, o.name == c.name)",
				"size(prev) == 0 ? 'new' : "+str("prev[0]", "image")+" == "+str("c", "image")+" ? 'same' : 'changed'")
			if ops == both {
				state = "request.operation != 'UPDATE' ? 'new' : " + state
			}
		}
		where := ""
		if described {
			where = "'where': " + lit(l.words+" ") + " + strings.quote(string(c.name)), "
		}
		parts = append(parts, list("object.spec", l.field)+".transformList(i, c, {"+
			"'imagePath': '/spec/"+l.field+"/' + string(i) + '/image', "+
			"'policyPath': '/spec/"+l.field+"/' + string(i) + '/imagePullPolicy', "+
			where+
			"'image': "+str("c", "image")+", "+
			"'policy': "+str("c", "imagePullPolicy")+", "+
			"'state': "+state+"})")
	}
	if ops != updates {
		where := ""
		if described {
			where = "'where': 'image volume ' + strings.quote(string(v.name)), "
		}
		volumes := list("object.spec", "volumes") + ".transformList(i, v, has(v.image), {" +
			"'imagePath': '/spec/volumes/' + string(i) + '/image/reference', " +
			"'policyPath': '/spec/volumes/' + string(i) + '/image/pullPolicy', " +
			where +
			"'image': " + str("v.image", "reference") + ", " +
			"'policy': " + str("v.image", "pullPolicy") + ", " +
			"'state': 'new'})"
		if ops == both {
			volumes = "(request.operation == 'CREATE' ? " + volumes + " : [])"
		}
		parts = append(parts, volumes)
	}
	return strings.Join(parts, " + ")
}

// operations says which Pod writes a policy matches.
type operations int

const (
	creates operations = iota + 1
	updates
	both
)

// anyRef is true when pred holds for one of the image references of refs
// (refsExpr(ops)), read straight from the object, as matchConditions
// cannot use variables: pred is given the field of the image and of the
// pull policy of a container c, or of an image volume v on CREATE.
func anyRef(ops operations, pred func(image, policy string) string) string {
	var parts []string
	for _, l := range containerLists {
		parts = append(parts, list("object.spec", l.field)+".exists(c, "+pred("c.image", "c.imagePullPolicy")+")")
	}
	if ops != updates {
		volumes := list("object.spec", "volumes") + ".exists(v, has(v.image) && (" + pred("v.image.reference", "v.image.pullPolicy") + "))"
		if ops == both {
			volumes = "(request.operation == 'CREATE' && " + volumes + ")"
		}
		parts = append(parts, volumes)
	}
	return strings.Join(parts, " || ")
}

// notCheap is the predicate of anyRef for "an image the cheap path cannot
// vouch for": absent (the parser's "" is its business), or not spelled
// under one of prefixes.
func notCheap(prefixes []string) func(image, _ string) string {
	return func(image, _ string) string { return "!has(" + image + ") || !" + cheapExpr(prefixes, image) }
}

// podVariables are the variables the Pod policies share: the image
// rules' constants, the references and those the webhook looks at (on
// UPDATE it skips unchanged ones).
func podVariables(ops operations, described bool, consts []admissionregistrationv1.Variable) []admissionregistrationv1.Variable {
	todo := "variables.refs"
	if ops != creates {
		todo = "variables.refs.filter(r, r.state != 'same')"
	}
	return append(slices.Clone(consts),
		admissionregistrationv1.Variable{Name: "refs", Expression: refsExpr(ops, described)},
		admissionregistrationv1.Variable{Name: "todo", Expression: todo},
	)
}

// podPolicy is the policy that mutates Pods for op (CREATE or UPDATE) as
// mutation.Rules.PodSpecOnCreate or PodSpecOnUpdate does.
//
// Two policies, because what makes each cheap differs. Every evaluation
// the API server makes for a policy (its matchConditions, its mutation)
// starts by converting the Pod, and on UPDATE the old Pod, to unstructured
// by reflection, which costs more than the CEL; and after a mutation,
// even one that patches nothing, the API server encodes the Pod to JSON
// and back and marks it changed, which runs the whole mutating chain a
// second time (see hack/). So the CREATE policy (reinvocationPolicy Never)
// has no matchConditions: its skip condition not-a-mirror-pod is folded
// into its one expression, one conversion per create. The UPDATE policy
// keeps its conditions as matchConditions: a label-only UPDATE, the common
// one, then costs one conversion and no patch at all. With IfNeeded the
// CREATE policy keeps them too, so that the second round costs one
// evaluation of matchConditions, not a second mutation.
//
// something-to-change is a sound over-approximation of "the mutation
// would change the Pod": false only when every image is spelled under an
// allowed prefix (the cheap path), every pull policy is the forced one and
// the pull secret is in place, as after the mutation has run.
func podPolicy(op admissionregistrationv1.OperationType, cfg config.Config, img rules, consts []admissionregistrationv1.Variable, policy string,
	reinvocation admissionregistrationv1.ReinvocationPolicyType, scope *admissionregistrationv1.MatchResources,
) (*admissionregistrationv1.MutatingAdmissionPolicy, *admissionregistrationv1.MutatingAdmissionPolicyBinding) {
	ops, name := creates, PodPolicyName
	conds := []admissionregistrationv1.MatchCondition{notAMirrorPod}
	if op == admissionregistrationv1.Update {
		ops, name = updates, PodUpdatePolicyName
		conds = append(conds, createOrImagesChanged)
	}
	vars := slices.Clone(consts)
	if ops != creates {
		vars = podVariables(ops, false, consts)
		if img.enabled() {
			// The rewrite of each reference looked at, by position in todo.
			vars = append(vars, admissionregistrationv1.Variable{Name: "rewrites", Expression: "variables.todo.map(r, " + img.imageExpr("r.image", variable) + ")"})
		}
	}
	// One mutation, so that it is never reinvoked for a change of its own
	// (reinvocationPolicy IfNeeded reruns a mutation when a later one
	// changed the object).
	var parts, needs []string
	if img.enabled() {
		if prefixes := img.literalPrefixes(); len(prefixes) > 0 {
			needs = append(needs, anyRef(ops, notCheap(prefixes)))
		} else {
			needs = append(needs, "true")
		}
	}
	if policy != "" {
		needs = append(needs, anyRef(ops, func(_, p string) string { return "!has(" + p + ") || " + p + " != " + lit(policy) }))
	}
	switch {
	case !img.enabled() && policy == "":
	case ops == creates:
		parts = append(parts, createPatches(img, policy))
	default:
		var patches []string
		if img.enabled() {
			// A refused image ([]) is left as it is: the provenance
			// policy refuses the Pod. One the kubelet never pulls too.
			if never := neverExpr(policy, "r.policy", "r.state", updates); never != "true" {
				patches = append(patches, "("+and(not(never), "size(variables.rewrites[i]) == 1 && variables.rewrites[i][0] != r.image")+" ? "+
					"[JSONPatch{op: 'replace', path: r.imagePath, value: variables.rewrites[i][0]}] : [])")
			}
		}
		if policy != "" {
			// Only a new container (an ephemeral one) gets the pull
			// policy: that of an existing one is immutable. "add" sets
			// the member whether or not it is present.
			patches = append(patches, "(r.state == 'new' && r.policy != "+lit(policy)+" ? "+
				"[JSONPatch{op: 'add', path: r.policyPath, value: "+lit(policy)+"}] : [])")
		}
		if len(patches) > 0 {
			parts = append(parts, "variables.todo.transformList(i, r, "+strings.Join(patches, " + ")+").flatten()")
		}
	}
	if cfg.Rules.PullSecret != "" && ops == creates {
		secret, need := secretExpr(cfg.Rules.PullSecret, cfg.Rules.AppendPullSecret)
		parts = append(parts, secret)
		needs = append(needs, need)
	}
	if !slices.Contains(needs, "true") {
		conds = append(conds, admissionregistrationv1.MatchCondition{Name: "something-to-change", Expression: strings.Join(needs, " || ")})
	}
	expr := strings.Join(parts, " + ")
	if ops == creates && reinvocation == admissionregistrationv1.NeverReinvocationPolicy {
		// Only not-a-mirror-pod is folded into the expression, which
		// returns no patch where it is false, as the API server would not
		// run it. something-to-change is left out: in the one evaluation
		// there is, it would only duplicate the work of a create that has
		// something to change, the common case (measured: it costs about
		// a quarter of the mutation), to save that of one that has not.
		expr = "(" + notAMirrorPod.Expression + ") ? " + expr + " : []"
		conds = nil
	}
	p := &admissionregistrationv1.MutatingAdmissionPolicy{
		TypeMeta:   typeMeta("MutatingAdmissionPolicy"),
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels()},
		Spec: admissionregistrationv1.MutatingAdmissionPolicySpec{
			FailurePolicy:    &failClosed,
			MatchConstraints: podRules(op),
			MatchConditions:  conds,
			Variables:        vars,
			Mutations: []admissionregistrationv1.Mutation{{
				PatchType: admissionregistrationv1.PatchTypeJSONPatch,
				JSONPatch: &admissionregistrationv1.JSONPatch{Expression: expr},
			}},
			ReinvocationPolicy: reinvocation,
		},
	}
	return p, &admissionregistrationv1.MutatingAdmissionPolicyBinding{
		TypeMeta:   typeMeta("MutatingAdmissionPolicyBinding"),
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels()},
		Spec:       admissionregistrationv1.MutatingAdmissionPolicyBindingSpec{PolicyName: name, MatchResources: scope},
	}
}

// createPatches is the image and pull policy patches of a CREATE,
// written straight over the Pod's lists rather than through the variables
// refs, todo and rewrites the UPDATE policy needs for its states: every
// reference of a CREATE is new, and building a map per reference, then
// looking it up by position, costs a third of the mutation (measured in
// BenchmarkPolicies).
func createPatches(img rules, policy string) string {
	ref := func(base, imagePath, policyPath, image, pullPolicy string) string {
		var patches []string
		if never := neverExpr(policy, pullPolicy, "'new'", creates); img.enabled() && never != "true" {
			// A refused image ([]) is left as it is: the provenance
			// policy refuses the Pod.
			patch := let("x", image, cheapExpr(img.literalPrefixes(), "x")+" ? [] : "+
				let("rw", img.decideExpr("x", variable), "size(rw) == 1 && rw[0] != x ? "+
					"[JSONPatch{op: 'replace', path: "+base+" + '"+imagePath+"', value: rw[0]}] : []"))
			if never != "false" {
				// One the kubelet never pulls is left as written.
				patch = "(" + never + " ? [] : " + patch + ")"
			}
			patches = append(patches, patch)
		}
		if policy != "" {
			// "add" sets the member whether or not it is present.
			patches = append(patches, "("+pullPolicy+" != "+lit(policy)+" ? "+
				"[JSONPatch{op: 'add', path: "+base+" + '"+policyPath+"', value: "+lit(policy)+"}] : [])")
		}
		if len(patches) == 0 {
			return "[]"
		}
		return strings.Join(patches, " + ")
	}
	var lists []string
	for _, l := range containerLists {
		lists = append(lists, list("object.spec", l.field)+".transformList(i, c, "+
			ref("'/spec/"+l.field+"/' + string(i)", "/image", "/imagePullPolicy", str("c", "image"), str("c", "imagePullPolicy"))+")")
	}
	lists = append(lists, list("object.spec", "volumes")+".transformList(i, v, has(v.image), "+
		ref("'/spec/volumes/' + string(i)", "/image/reference", "/image/pullPolicy", str("v.image", "reference"), str("v.image", "pullPolicy"))+")")
	return "(" + strings.Join(lists, " + ") + ").flatten()"
}

// secretExpr is mutation.Rules.pullSecret: replace makes the list exactly
// [secret]; append adds secret at the end when it is not there. need is
// true when the patch is not empty. Written with as few comprehensions as
// the rule allows: each one costs an evaluation step per element, with
// cost tracking. A reference without a name is no match, as in the Go
// rules (an absent name is "").
func secretExpr(secret string, appendMode bool) (patch, need string) {
	const pullSecrets = "object.spec.imagePullSecrets"
	whole := "[JSONPatch{op: 'add', path: '/spec/imagePullSecrets', value: [{'name': " + lit(secret) + "}]}]"
	if appendMode {
		has := "(has(" + pullSecrets + ") && " + pullSecrets + ".exists(s, has(s.name) && s.name == " + lit(secret) + "))"
		return "(" + has + " ? [] : has(" + pullSecrets + ") && size(" + pullSecrets + ") > 0 ? " +
				"[JSONPatch{op: 'add', path: '/spec/imagePullSecrets/-', value: {'name': " + lit(secret) + "}}] : " + whole + ")",
			"!" + has
	}
	only := "(has(" + pullSecrets + ") && size(" + pullSecrets + ") == 1 && has(" + pullSecrets + "[0].name) && " +
		pullSecrets + "[0].name == " + lit(secret) + ")"
	return "(" + only + " ? [] : " + whole + ")", "!" + only
}

// pvcPolicy defaults the storage class as mutation.Rules.PVCOnCreate does.
func pvcPolicy(cfg config.Config, scope *admissionregistrationv1.MatchResources) (*admissionregistrationv1.MutatingAdmissionPolicy, *admissionregistrationv1.MutatingAdmissionPolicyBinding) {
	// No matchConditions: they would cost an evaluation of their own (see
	// podPolicy).
	expr := "has(object.spec.storageClassName) || (has(object.metadata.annotations) && " +
		lit(mutation.BetaStorageClassAnnotation) + " in object.metadata.annotations) ? [] : " +
		"[JSONPatch{op: 'add', path: '/spec/storageClassName', value: " + lit(cfg.Rules.StorageClass) + "}]"
	p := &admissionregistrationv1.MutatingAdmissionPolicy{
		TypeMeta:   typeMeta("MutatingAdmissionPolicy"),
		ObjectMeta: metav1.ObjectMeta{Name: PVCPolicyName, Labels: labels()},
		Spec: admissionregistrationv1.MutatingAdmissionPolicySpec{
			FailurePolicy: &failClosed,
			MatchConstraints: &admissionregistrationv1.MatchResources{
				MatchPolicy: &equivalent,
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"persistentvolumeclaims"}, Scope: &namespaced},
				}}},
			},
			Mutations: []admissionregistrationv1.Mutation{{
				PatchType: admissionregistrationv1.PatchTypeJSONPatch,
				JSONPatch: &admissionregistrationv1.JSONPatch{Expression: expr},
			}},
			ReinvocationPolicy: admissionregistrationv1.NeverReinvocationPolicy,
		},
	}
	return p, &admissionregistrationv1.MutatingAdmissionPolicyBinding{
		TypeMeta:   typeMeta("MutatingAdmissionPolicyBinding"),
		ObjectMeta: metav1.ObjectMeta{Name: PVCPolicyName, Labels: labels()},
		Spec:       admissionregistrationv1.MutatingAdmissionPolicyBindingSpec{PolicyName: PVCPolicyName, MatchResources: scope},
	}
}

// quoteExpr is images.Quote of the string expression s: quoted, and
// shortened past 100 characters with its length in bytes.
func quoteExpr(s string) string {
	return "(size(" + s + ") <= 100 ? strings.quote(" + s + ") : strings.quote(" + s + ".substring(0, 100)) + '… (' + string(size(bytes(" + s + "))) + ' characters)')"
}

// provenancePolicy is the validating policy of both Generate and Guard:
// it refuses a Pod that, after every mutation, still makes the kubelet
// pull an image the webhook would not leave as it is: one the webhook
// refuses (no valid rewrite) or would rewrite. Validation runs after all
// mutations, so the references it sees are the ones the Pod is stored
// with: one the webhook or the Pod policy rewrote passes (the rewrite is
// idempotent), as does one they leave alone. notRewritten ends the message
// for an image that was not rewritten: why that can happen.
func provenancePolicy(name string, img rules, consts []admissionregistrationv1.Variable, scope *admissionregistrationv1.MatchResources,
	forced, notRewritten string,
) (*admissionregistrationv1.ValidatingAdmissionPolicy, *admissionregistrationv1.ValidatingAdmissionPolicyBinding) {
	prefixes := img.literalPrefixes()
	// The references looked at that the cheap path cannot vouch for and
	// the kubelet pulls, with what the webhook makes of them ("to": the
	// image to pull, "" when it refuses the reference), those it would not
	// leave as written.
	pulled := "!" + cheapExpr(prefixes, "r.image")
	if exempt := storedNeverExpr(forced, "r.policy", "r.state"); exempt != "false" {
		pulled += " && !(" + exempt + ")"
	}
	vars := append(podVariables(both, true, consts), admissionregistrationv1.Variable{
		Name: "unfit",
		Expression: "variables.todo.filter(r, " + pulled + ").map(r, " +
			let("rw", img.decideExpr("r.image", variable), "{'where': r.where, 'image': r.image, 'to': size(rw) == 1 ? rw[0] : ''}") +
			").filter(u, u.to != u.image)",
	})
	// The webhook's words: which reference, which image and why.
	refused := "' cannot be pulled from an allowed registry: ' + (size(bytes(u.image)) > " + fmt.Sprint(images.MaxReferenceLength) +
		" ? 'it is longer than any reference a runtime can pull (" + fmt.Sprint(images.MaxReferenceLength) + ")' : " +
		"'its rewrite is not a valid reference (a repository name is at most 255 characters)')"
	unrewritten := "' is not from a registry the mutator allows (it would pull ' + " + quoteExpr("u.to") + " + ')'"
	message := "'mutator: ' + variables.unfit.map(u, u.where + ': image ' + " + quoteExpr("u.image") + " + (u.to == '' ? " + refused + " : " + unrewritten + ")).join('; ') + " +
		"(variables.unfit.exists(u, u.to != '') ? " + lit("; "+notRewritten+" (ValidatingAdmissionPolicy "+name+")") + " : '')"
	// Unlike the mutating policies, this one keeps its conditions as
	// matchConditions: where they are false (a Pod whose images are all
	// spelled under allowed prefixes, as the webhook and the Pod policy
	// leave them, or a label-only UPDATE) the API server evaluates them
	// once and neither the validation nor its message, each of which
	// would be an evaluation of its own.
	conds := []admissionregistrationv1.MatchCondition{notAMirrorPod, createOrImagesChanged}
	if len(prefixes) > 0 {
		conds = append(conds, admissionregistrationv1.MatchCondition{
			Name:       "an-image-to-check",
			Expression: anyRef(both, notCheap(prefixes)),
		})
	}
	p := &admissionregistrationv1.ValidatingAdmissionPolicy{
		TypeMeta:   typeMeta("ValidatingAdmissionPolicy"),
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels()},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy:    &failClosed,
			MatchConstraints: podRules(admissionregistrationv1.Create, admissionregistrationv1.Update),
			MatchConditions:  conds,
			Variables:        vars,
			Validations: []admissionregistrationv1.Validation{{
				Expression:        "size(variables.unfit) == 0",
				MessageExpression: message,
				Reason:            ptr(metav1.StatusReasonForbidden),
			}},
		},
	}
	return p, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		TypeMeta:   typeMeta("ValidatingAdmissionPolicyBinding"),
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels()},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
			MatchResources:    scope,
		},
	}
}

func ptr[T any](v T) *T { return &v }

// neverExpr is the CEL condition "the kubelet pulls nothing for this
// reference" of the mutating policies, as mutation.Rules decides it before
// any change: its effective pull policy is Never, the forced one where the
// rules set it (on CREATE, and on UPDATE a new container) and its own
// (policy, a string expression) elsewhere. state is the reference's state
// expression (refsExpr) on UPDATE. The result is "true" or "false" where
// the configuration decides it.
func neverExpr(forced, policy, state string, ops operations) string {
	const never = "'Never'"
	switch {
	case forced == "":
		return policy + " == " + never
	case ops == creates:
		// Every reference is new and gets the forced policy.
		if forced == string(corev1.PullNever) {
			return "true"
		}
		return "false"
	case forced == string(corev1.PullNever):
		return state + " == 'new' || " + policy + " == " + never
	default:
		return state + " != 'new' && " + policy + " == " + never
	}
}

// storedNeverExpr is the exemption of the provenance policy, which sees a
// Pod after the mutating stage: a reference the kubelet does not pull, by
// its pull policy as stored. Where a forced policy other than Never would
// have been set (a new reference), its own Never is no exemption: the
// webhook would have made it pull, so it is refused unrewritten like any
// other.
func storedNeverExpr(forced, policy, state string) string {
	const never = "'Never'"
	if forced == "" || forced == string(corev1.PullNever) {
		return policy + " == " + never
	}
	return state + " != 'new' && " + policy + " == " + never
}

// not and and build boolean CEL, folding the constants neverExpr returns.
func not(x string) string {
	switch x {
	case "true":
		return "false"
	case "false":
		return "true"
	}
	return "!(" + x + ")"
}

func and(x, y string) string {
	switch x {
	case "true":
		return y
	case "false":
		return "false"
	}
	return x + " && " + y
}
