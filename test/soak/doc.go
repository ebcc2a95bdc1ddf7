// Package soak holds soak and drain tests of the mutator binary: it is
// built, started on loopback with TLS, and driven by test/load/loadgen.
//
//   - TestSoakShort: a fixed rate for about 10 s; zero errors, and the
//     resident set after the run within a bound of the one after warm-up.
//   - TestSoak: the same for SOAK_DURATION at SOAK_RATE (make soak); skipped
//     unless SOAK_DURATION is set.
//   - TestDrainOnSIGTERM: SIGTERM under load; every request the server took
//     is answered, the process exits 0, and later connections are refused.
//   - TestRestartUnderLoad: a rolling restart of two instances under load
//     with clients that retry refused connections on the other instance.
//
// Memory figures are asserted; timings never are. MUTATOR_BIN names a
// prebuilt binary; otherwise ./cmd/mutator is built once per run. Linux
// only (RSS comes from /proc).
package soak
