package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// checkTypes finds every variable whose value envconfig could not convert
// to its field's type, so that Load can report them all at once, each with
// the variable, the value and what is allowed (envconfig stops at the first
// and words it in terms of Go types). It converts values the way envconfig
// does: strconv.ParseBool, strconv.ParseInt(v, 0, 64), time.ParseDuration,
// and Decode for types that implement envconfig.Decoder.
func checkTypes() []error {
	var errs []error
	t := reflect.TypeFor[Env]()
	for i := range t.NumField() {
		f := t.Field(i)
		key := f.Tag.Get("envconfig")
		value, ok := os.LookupEnv(key)
		if key == "" || !ok {
			continue
		}
		if err := checkValue(f.Type, value); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q %w", key, value, err))
		}
	}
	return errs
}

var durationType = reflect.TypeFor[time.Duration]()

func checkValue(t reflect.Type, value string) error {
	return setField(reflect.New(t).Elem(), value)
}

// setField converts value the way envconfig does and stores it in v.
func setField(v reflect.Value, value string) error {
	if d, ok := v.Addr().Interface().(envconfig.Decoder); ok {
		if err := d.Decode(value); err != nil {
			return fmt.Errorf("is not valid: %w", err)
		}
		return nil
	}
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(value)
		if err != nil {
			return errors.New("is not a duration (such as 500ms, 5s or 1m)")
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(value)
		if err != nil {
			return errors.New("is not a boolean (true or false)")
		}
		v.SetBool(b)
	case v.Kind() == reflect.Int:
		n, err := strconv.ParseInt(value, 0, 64)
		if err != nil {
			return errors.New("is not a whole number")
		}
		v.SetInt(n)
	case v.Kind() == reflect.String:
		v.SetString(value)
	default:
		return fmt.Errorf("has no conversion to %s", v.Type())
	}
	return nil
}

// validateGC checks GOGC and GOMEMLIMIT as the Go runtime reads them: the
// runtime ignores a value it cannot parse, silently.
func validateGC(gogc, memLimit string) []error {
	var errs []error
	if gogc != "" && gogc != "off" {
		if n, err := strconv.Atoi(gogc); err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("GOGC: %q is not a percentage (a whole number, 100 is Go's default) or off", gogc))
		}
	}
	if memLimit != "" && memLimit != "off" && !validByteCount(memLimit) {
		errs = append(errs, fmt.Errorf("GOMEMLIMIT: %q is not a size such as 80MiB (a whole number of bytes with an optional unit B, KiB, MiB, GiB or TiB) or off", memLimit))
	}
	return errs
}

// validByteCount accepts what the Go runtime's GOMEMLIMIT parser accepts:
// digits and an optional IEC unit.
func validByteCount(s string) bool {
	for _, unit := range []string{"TiB", "GiB", "MiB", "KiB", "B"} {
		if rest, ok := strings.CutSuffix(s, unit); ok {
			s = rest
			break
		}
	}
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
