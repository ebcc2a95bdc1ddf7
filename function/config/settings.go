package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
)

// Setting describes one environment variable, from the tags of its Env
// field: the documentation table and the Helm chart's values schema are
// generated from these (make generate), so they cannot drift from the code.
type Setting struct {
	Env         string   // the variable
	Default     string   // "" when unset means off or empty
	Description string   // one sentence or two
	Type        string   // string, bool, int, duration, quantity or list
	Enum        []string // the values allowed, when they are a fixed set
	Helm        string   // key under the chart's config: ("mirror.check"); "" when the chart sets it otherwise
	Group       string   // rules, server, events, mirror or runtime
	Summary     bool     // one of the most used: the README lists it
}

// Settings lists every variable Env reads, in the order of its fields.
func Settings() []Setting {
	t := reflect.TypeFor[Env]()
	out := make([]Setting, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		s := Setting{
			Env:         f.Tag.Get("envconfig"),
			Default:     f.Tag.Get("default"),
			Description: f.Tag.Get("desc"),
			Type:        typeName(f.Type),
			Helm:        f.Tag.Get("helm"),
			Group:       f.Tag.Get("group"),
			Summary:     f.Tag.Get("summary") == "true",
		}
		if enum := f.Tag.Get("enum"); enum != "" {
			s.Enum = slices.DeleteFunc(strings.Split(enum, ","), func(v string) bool { return v == "" })
		}
		out = append(out, s)
	}
	return out
}

func typeName(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return "duration"
	case t == reflect.TypeFor[Quantity]():
		return "quantity"
	case t == reflect.TypeFor[List]():
		return "list"
	}
	return t.Kind().String()
}

// checkEnums checks every setting whose field has an enum tag against it,
// so that the allowed values are written once, in the tag.
func checkEnums(e Env) []error {
	var errs []error
	v := reflect.ValueOf(e)
	t := v.Type()
	for i := range t.NumField() {
		enum := t.Field(i).Tag.Get("enum")
		if enum == "" || t.Field(i).Tag.Get("group") == "mirror" && !e.MirrorCheck {
			// The MIRROR_* settings matter, so are checked, only with
			// MIRROR_CHECK on.
			continue
		}
		allowed := strings.Split(enum, ",")
		value := v.Field(i).String()
		if slices.Contains(allowed, value) {
			continue
		}
		shown := slices.DeleteFunc(slices.Clone(allowed), func(s string) bool { return s == "" })
		errs = append(errs, fmt.Errorf("%s: %q is not one of %s", t.Field(i).Tag.Get("envconfig"), value, strings.Join(shown, ", ")))
	}
	return errs
}

// Defaults returns the Env of an empty environment: every field at its
// default tag. Tests and tools that build an Env by hand start from it.
func Defaults() Env {
	var e Env
	v := reflect.ValueOf(&e).Elem()
	t := v.Type()
	var errs []error
	for i := range t.NumField() {
		def := t.Field(i).Tag.Get("default")
		if def == "" {
			continue
		}
		if err := setField(v.Field(i), def); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t.Field(i).Tag.Get("envconfig"), err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		// The defaults are constants of this package, tested by
		// TestDefaultsParse.
		panic("config: invalid default: " + err.Error())
	}
	return e
}
