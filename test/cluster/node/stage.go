package node

import "os"

// Environment variables the stages pass on to each other.
const (
	stageEnv   = "MUTATOR_NODE_STAGE"
	workDirEnv = "MUTATOR_NODE_WORKDIR"
	cgroupEnv  = "MUTATOR_NODE_CGROUP"
	hostsEnv   = "MUTATOR_NODE_HOSTS"
)

// Stage is which of the three processes of an isolated run this one is.
type Stage int

const (
	// StageHost is the process `go test` started, in the machine's namespaces.
	StageHost Stage = iota
	// StageInit is PID 1 of the namespaces Isolate created.
	StageInit
	// StageTest runs the tests inside the namespaces.
	StageTest
)

// CurrentStage reports the stage of this process.
func CurrentStage() Stage {
	switch os.Getenv(stageEnv) {
	case "init":
		return StageInit
	case "test":
		return StageTest
	default:
		return StageHost
	}
}

// WorkDir is the directory Isolate was given, as seen by the test stage: it
// is on disk and shared with the host stage, which removes it at the end.
func WorkDir() string { return os.Getenv(workDirEnv) }
