// Package version says which build of mutator is running. The release
// build stamps it with -ldflags "-X
// github.com/mutator-dev/mutator/function/version.version=v1.2.3 -X
// ...version.commit=abc123" (see the Makefile); otherwise the VCS revision Go
// records in the binary is used.
package version

import (
	"runtime/debug"
)

// Stamped by the linker; empty when not.
var (
	version string
	commit  string
)

// Info is the build's version, commit and Go version.
type Info struct {
	Version   string
	Commit    string
	GoVersion string
}

// Get returns the running build's Info.
func Get() Info {
	info := Info{Version: version, Commit: commit}
	if info.Version == "" {
		info.Version = "dev"
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		info.GoVersion = bi.GoVersion
		if info.Commit == "" {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					info.Commit = s.Value
				}
			}
		}
		if info.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
	}
	return info
}

// String is the one line `mutator version` prints.
func (i Info) String() string {
	s := "mutator " + i.Version
	if i.Commit != "" {
		s += " (commit " + i.Commit + ")"
	}
	if i.GoVersion != "" {
		s += " " + i.GoVersion
	}
	return s
}
