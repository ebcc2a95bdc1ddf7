package mutation

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// OriginalImagesAnnotation is the Pod annotation in which, with
// RECORD_ORIGINAL_IMAGES, the rules record the image each rewritten
// reference asked for: a compact JSON object from a key per reference
// ("containers/app", "initContainers/init", "ephemeralContainers/debug",
// "volumes/data") to the image as written.
const OriginalImagesAnnotation = "mutator.dev/original-images"

// MaxOriginalImagesBytes bounds the annotation's value. Past it the entries
// are kept in order while they fit, and the last member,
// OriginalImagesMore, says how many more there were ("3 more").
const MaxOriginalImagesBytes = 8 << 10

// OriginalImagesMore is the key of the last member of a value cut at
// MaxOriginalImagesBytes.
const OriginalImagesMore = "…"

// original is one entry of the annotation.
type original struct{ key, image string }

// podMeta is what the rules know of a pod spec's object: whether it was
// decoded as part of a Pod (known), whether that Pod has metadata and
// metadata.annotations, and the annotation OriginalImagesAnnotation.
type podMeta struct {
	known       bool
	metadata    bool
	annotations bool
	recorded    bool
	value       string
}

// recordOriginals is the change that records entries in the Pod's
// annotation, merged on UPDATE with the entries it already records (a
// value that is not such an object is replaced). On CREATE the value a Pod
// author wrote is replaced: the record is the webhook's, not the author's.
func recordOriginals(prefix string, meta *podMeta, entries []original, update bool) (Change, bool) {
	if !meta.known || !strings.HasSuffix(prefix, "/spec") {
		return Change{}, false
	}
	var more int
	if update && meta.recorded {
		if prev, n, ok := parseOriginals(meta.value); ok {
			entries, more = mergeOriginals(prev, entries), n
		}
	}
	value := encodeOriginals(entries, more)
	from := ""
	if meta.recorded {
		from = meta.value
		if from == value {
			return Change{}, false
		}
	}
	base := strings.TrimSuffix(prefix, "spec") + "metadata"
	c := Change{Kind: KindAnnotation, From: from, To: value, op: "add"}
	switch {
	case !meta.metadata:
		c.Path, c.value = base, map[string]any{"annotations": map[string]string{OriginalImagesAnnotation: value}}
	case !meta.annotations:
		c.Path, c.value = base+"/annotations", map[string]string{OriginalImagesAnnotation: value}
	default:
		// "add" sets the member whether or not it is present.
		c.Path, c.value = base+"/annotations/"+escapePointer(OriginalImagesAnnotation), value
	}
	return c, true
}

// escapePointer escapes a member name for a JSON pointer (RFC 6901).
func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// mergeOriginals returns prev with the entries of next: a key recorded
// again takes its new image in place, new keys follow in order.
func mergeOriginals(prev, next []original) []original {
	out := prev
	for _, e := range next {
		found := false
		for i := range out {
			if out[i].key == e.key {
				out[i].image, found = e.image, true
				break
			}
		}
		if !found {
			out = append(out, e)
		}
	}
	return out
}

// encodeOriginals encodes entries (the first of each key) as a compact JSON
// object of at most MaxOriginalImagesBytes: entries are kept in order while
// they fit with the OriginalImagesMore member that counts the rest and the
// more entries a value it merges had already left out.
func encodeOriginals(entries []original, more int) string {
	seen := make(map[string]bool, len(entries))
	members := make([][]byte, 0, len(entries))
	for _, e := range entries {
		if seen[e.key] {
			continue
		}
		seen[e.key] = true
		m := appendString(nil, e.key)
		m = append(m, ':')
		members = append(members, appendString(m, e.image))
	}
	b := []byte{'{'}
	kept := 0
	for i, m := range members {
		rest := len(members) - i - 1 + more
		size := len(b) + len(m) + 1 // with the closing "}"
		if kept > 0 {
			size++ // the "," before it
		}
		if rest > 0 {
			size += len(moreMember(rest)) + 1
		}
		if size > MaxOriginalImagesBytes {
			break
		}
		if kept > 0 {
			b = append(b, ',')
		}
		b = append(b, m...)
		kept++
	}
	if rest := len(members) - kept + more; rest > 0 {
		if kept > 0 {
			b = append(b, ',')
		}
		b = append(b, moreMember(rest)...)
	}
	return string(append(b, '}'))
}

func moreMember(n int) []byte {
	return appendString(append(appendString(nil, OriginalImagesMore), ':'), strconv.Itoa(n)+" more")
}

// appendString appends s as a JSON string; invalid UTF-8 (which the API
// server never sends) becomes U+FFFD.
func appendString(dst []byte, s string) []byte {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	out, err := jsontext.AppendQuote(dst, s)
	if err != nil {
		return strconv.AppendQuote(dst, s) // unreachable: s is valid UTF-8
	}
	return out
}

// parseOriginals reads a value of the annotation: its entries in order and
// the count of a final OriginalImagesMore member. ok is false for anything
// but a JSON object of strings, whose content is then not trusted.
func parseOriginals(value string) (entries []original, more int, ok bool) {
	dec := jsontext.NewDecoder(strings.NewReader(value))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return nil, 0, false
	}
	for dec.PeekKind() == '"' {
		k, err := dec.ReadToken()
		if err != nil {
			return nil, 0, false
		}
		key := k.String() // before the next read voids k
		v, err := dec.ReadToken()
		if err != nil || v.Kind() != '"' {
			return nil, 0, false
		}
		if key == OriginalImagesMore {
			n, err := strconv.Atoi(strings.TrimSuffix(v.String(), " more"))
			if err != nil || n < 0 {
				return nil, 0, false
			}
			more += n
			continue
		}
		entries = append(entries, original{key, v.String()})
	}
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '}' {
		return nil, 0, false
	}
	if _, err := dec.ReadToken(); err == nil {
		return nil, 0, false // something after the object
	}
	return entries, more, true
}

// UnmarshalJSONFrom decodes a Pod, and records in its Spec what the rules
// need of its metadata to write OriginalImagesAnnotation with a valid
// patch: whether metadata and metadata.annotations are present, and the
// annotation's value. Only that annotation is read; the others are
// skipped without being kept.
func (p *Pod) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	var v struct {
		Metadata *podMetadata `json:"metadata"`
		Spec     *PodSpec     `json:"spec"`
	}
	v.Spec = &p.Spec
	if err := jsonv2.UnmarshalDecode(dec, &v); err != nil {
		return err
	}
	p.Spec.meta = podMeta{known: true}
	if m := v.Metadata; m != nil {
		p.Metadata = m.Metadata
		p.Spec.meta.metadata = true
		p.Spec.meta.annotations = m.Annotations.present
		p.Spec.meta.recorded, p.Spec.meta.value = m.Annotations.recorded, m.Annotations.value
	}
	return nil
}

// podMetadata is a Pod's metadata as the decoding of a Pod reads it.
type podMetadata struct {
	Metadata
	Annotations annotationProbe `json:"annotations"`
}

// annotationProbe decodes metadata.annotations into whether it is an
// object and the value of OriginalImagesAnnotation.
type annotationProbe struct {
	present, recorded bool
	value             string
}

func (a *annotationProbe) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	tok, err := dec.ReadToken()
	if err != nil {
		return err
	}
	switch tok.Kind() {
	case 'n':
		return nil
	case '{':
	default:
		return fmt.Errorf("annotations: want an object, got %v", tok.Kind())
	}
	a.present = true
	for dec.PeekKind() != '}' {
		// The raw name, compared without a copy: most Pods have a few
		// annotations, and only one matters here.
		name, err := dec.ReadValue()
		if err != nil {
			return err
		}
		if !isOriginalImagesName(name) {
			if err := dec.SkipValue(); err != nil {
				return err
			}
			continue
		}
		v, err := dec.ReadToken()
		if err != nil {
			return err
		}
		if v.Kind() != '"' {
			return fmt.Errorf("annotation %s: want a string, got %v", OriginalImagesAnnotation, v.Kind())
		}
		a.recorded, a.value = true, v.String()
	}
	_, err = dec.ReadToken()
	return err
}

// quotedOriginalImages is OriginalImagesAnnotation as a JSON string.
const quotedOriginalImages = `"` + OriginalImagesAnnotation + `"`

// isOriginalImagesName says whether the raw object member name is
// OriginalImagesAnnotation, however it is escaped.
func isOriginalImagesName(name jsontext.Value) bool {
	if string(name) == quotedOriginalImages {
		return true
	}
	if len(name) == 0 || name.Kind() != '"' || !strings.ContainsRune(string(name), '\\') {
		return false
	}
	var s string
	return jsonv2.Unmarshal(name, &s) == nil && s == OriginalImagesAnnotation
}
