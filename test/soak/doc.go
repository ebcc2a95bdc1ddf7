// Package soak holds soak and drain tests of the mutator binary: it is
// built, started on loopback with TLS, and driven by test/load/loadgen.
//
//   - TestSoak: a fixed rate (500 req/s for 10 s in make test; SOAK_RATE for
//     SOAK_DURATION in make soak) with zero errors, and the resident set
//     after the run within a bound of the one after warm-up.
//   - TestDrainOnSIGTERM: SIGTERM under load; every request the server took
//     is answered, the process exits 0, and later connections are refused.
//   - TestRestartUnderLoad: a rolling restart of two instances under load
//     with clients that retry refused connections on the other instance.
//
// Memory figures are asserted; timings never are. MUTATOR_BIN names a
// prebuilt binary; otherwise ./cmd/mutator is built once per run. Linux
// only (RSS comes from /proc).
package soak
