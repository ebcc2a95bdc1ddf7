package main

import (
	"reflect"
	"strconv"
	"strings"
)

// op is one operation of a JSON patch (RFC 6902).
type op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// diff returns the JSON patch that turns a into b (both decoded JSON:
// maps, lists, scalars). Lists are compared element by element along their
// longest common subsequence, so an element inserted or removed is one
// operation and the others stay; an element changed in place (same
// position, and for objects the same "name", if any) is patched
// field by field. Operations are in the order they apply in.
func diff(at string, a, b any) []op {
	switch a := a.(type) {
	case map[string]any:
		if b, ok := b.(map[string]any); ok {
			return diffMap(at, a, b)
		}
	case []any:
		if b, ok := b.([]any); ok {
			return diffList(at, a, b)
		}
	}
	if reflect.DeepEqual(a, b) {
		return nil
	}
	return []op{{Op: "replace", Path: at, Value: b}}
}

func diffMap(at string, a, b map[string]any) []op {
	var ops []op
	for _, k := range sortedKeys(a) {
		if _, ok := b[k]; !ok {
			ops = append(ops, op{Op: "remove", Path: at + "/" + escape(k)})
		}
	}
	for _, k := range sortedKeys(b) {
		av, ok := a[k]
		if !ok {
			ops = append(ops, op{Op: "add", Path: at + "/" + escape(k), Value: b[k]})
			continue
		}
		ops = append(ops, diff(at+"/"+escape(k), av, b[k])...)
	}
	return ops
}

func diffList(at string, a, b []any) []op {
	n, m := len(a), len(b)
	// lcs[i][j] is the length of the longest common subsequence of a[i:]
	// and b[j:].
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if reflect.DeepEqual(a[i], b[j]) {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var ops []op
	i, j, k := 0, 0, 0 // k: the index in the list as patched so far
	for i < n || j < m {
		if i < n && j < m && reflect.DeepEqual(a[i], b[j]) {
			i, j, k = i+1, j+1, k+1
			continue
		}
		// The run of removals and insertions up to the next common element.
		var removed, added []any
		for i < n || j < m {
			if i < n && j < m && reflect.DeepEqual(a[i], b[j]) {
				break
			}
			if j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]) {
				added = append(added, b[j])
				j++
			} else {
				removed = append(removed, a[i])
				i++
			}
		}
		// An element replaced by a similar one is patched in place.
		for len(removed) > 0 && len(added) > 0 && similar(removed[0], added[0]) {
			ops = append(ops, diff(at+"/"+strconv.Itoa(k), removed[0], added[0])...)
			removed, added, k = removed[1:], added[1:], k+1
		}
		for range removed {
			ops = append(ops, op{Op: "remove", Path: at + "/" + strconv.Itoa(k)})
		}
		for _, v := range added {
			ops = append(ops, op{Op: "add", Path: at + "/" + strconv.Itoa(k), Value: v})
			k++
		}
	}
	return ops
}

// similar reports whether b is better written as a patch of a than as a
// replacement: both objects, with the same name if they have one (a
// container, an env entry, a volume), or both lists.
func similar(a, b any) bool {
	switch a := a.(type) {
	case map[string]any:
		b, ok := b.(map[string]any)
		return ok && reflect.DeepEqual(a["name"], b["name"])
	case []any:
		_, ok := b.([]any)
		return ok
	}
	return false
}

// escape is a JSON pointer reference token (RFC 6901).
func escape(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}
