// Package defaults fills in the zero values of option structs: the
// packages that take Options (mirror, events, copier, the admission
// controller's copy requests, the load generator) read "0 or less" as "the
// default", and say so in one way.
package defaults

// Number is what an option with a positive default can be: counts, byte
// sizes and time.Duration.
type Number interface {
	~int | ~int64
}

// Positive returns v, or def when v is 0 or less.
func Positive[T Number](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}
