// Package scaffold tests the mutator the way `func build` packages it: it
// writes func's Go scaffolding around the repository root with func's own
// code, builds the generated main, runs it and talks to it over HTTP.
package scaffold
