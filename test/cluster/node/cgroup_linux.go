package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// cgroupPrefix names the cgroup under which the kubelet puts every Pod
// (its cgroupRoot), followed by the host stage's PID: concurrent runs do
// not share one, and a dead PID marks a leftover.
const cgroupPrefix = "mutator-node-"

// hierarchy is one mounted cgroup hierarchy.
type hierarchy struct {
	dir string
	v2  bool
}

// hierarchies lists the mounted cgroup hierarchies. These machines mount
// v1 (the kubelet runs in v1 mode) plus an empty unified hierarchy.
func hierarchies() ([]hierarchy, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	var hs []hierarchy
	for line := range strings.Lines(string(data)) {
		// Fields after " - " are the filesystem type and source.
		before, after, ok := strings.Cut(line, " - ")
		fields, fsFields := strings.Fields(before), strings.Fields(after)
		if !ok || len(fields) < 5 || len(fsFields) < 1 {
			continue
		}
		switch fsFields[0] {
		case "cgroup":
			hs = append(hs, hierarchy{dir: fields[4]})
		case "cgroup2":
			hs = append(hs, hierarchy{dir: fields[4], v2: true})
		}
	}
	if len(hs) == 0 {
		return nil, errors.New("no cgroup hierarchy mounted")
	}
	return hs, nil
}

// createCgroupRoot creates name in every v1 hierarchy: the kubelet checks
// that its cgroupRoot exists before it creates the Pod cgroups below it.
// cpuset starts empty in a new v1 cgroup, and no task may join it until
// it has CPUs and memory nodes, so those are copied from the parent.
func createCgroupRoot(name string) error {
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		if h.v2 {
			continue
		}
		dir := filepath.Join(h.dir, name)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("creating cgroup %s: %w", dir, err)
		}
		for _, file := range []string{"cpuset.cpus", "cpuset.mems"} {
			value, err := os.ReadFile(filepath.Join(h.dir, file))
			if errors.Is(err, fs.ErrNotExist) {
				continue // not the cpuset hierarchy
			}
			if err != nil {
				return fmt.Errorf("reading %s: %w", file, err)
			}
			if err := os.WriteFile(filepath.Join(dir, file), value, 0o644); err != nil {
				return fmt.Errorf("setting %s of %s: %w", file, dir, err)
			}
		}
	}
	return nil
}

// removeCgroupRoot removes name and everything below it from every
// hierarchy, deepest first, retrying while the last processes die.
func removeCgroupRoot(name string, timeout time.Duration) error {
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	var problems []error
	for _, h := range hs {
		root := filepath.Join(h.dir, name)
		for {
			err := removeTree(root)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				problems = append(problems, fmt.Errorf("removing cgroup %s: %w", root, err))
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return errors.Join(problems...)
}

// removeTree rmdirs every directory under root (cgroup directories hold
// only kernel files, which rmdir takes along), children first.
func removeTree(root string) error {
	var dirs []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	slices.Reverse(dirs)
	for _, dir := range dirs {
		if err := syscall.Rmdir(dir); err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("rmdir %s: %w", dir, err)
		}
	}
	return nil
}

// sweepCgroups removes the cgroups of earlier runs whose host stage is
// gone (killed before it could clean up); those of live runs stay.
func sweepCgroups(logf func(string, ...any)) {
	hs, err := hierarchies()
	if err != nil {
		return
	}
	for _, h := range hs {
		matches, _ := filepath.Glob(filepath.Join(h.dir, cgroupPrefix+"*"))
		for _, dir := range matches {
			if alive(strings.TrimPrefix(filepath.Base(dir), cgroupPrefix)) {
				continue
			}
			if err := removeTree(dir); err != nil {
				logf("node: leftover cgroup of an earlier run: %v", err)
			} else {
				logf("node: removed leftover cgroup %s of an earlier run", dir)
			}
		}
	}
}
