package knative

import (
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	fn "knative.dev/func/pkg/functions"
)

// funcBuildFiles lists the files func's host builder would put into the
// image's /func data layer with the given .funcignore patterns, walking
// the tree as its newDataTarball does (an ignored directory is skipped
// whole).
func funcBuildFiles(t *testing.T, root string, patterns []string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if rel != "." && fn.IsIgnored(rel, patterns) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.IsDir() {
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", root, err)
	}
	return files
}

// allowedInFuncBuild is what the function needs: its module files, the
// entry point, func.yaml and the non-test Go sources of function/.
func allowedInFuncBuild(file string) bool {
	switch file {
	case "go.mod", "go.sum", "handle.go", "func.yaml":
		return true
	}
	return strings.HasPrefix(file, "function/") && strings.HasSuffix(file, ".go") && !strings.HasSuffix(file, "_test.go")
}

func TestFuncIgnoreKeepsBuildsToTheFunction(t *testing.T) {
	root := repoRoot(t)
	files := funcBuildFiles(t, root, fn.ParseFuncIgnore(root))
	for _, f := range files {
		if !allowedInFuncBuild(f) {
			t.Errorf("func builds would ship %s; add it to .funcignore", f)
		}
	}
	for _, need := range []string{"go.mod", "go.sum", "handle.go", "function/config/config.go"} {
		if !slices.Contains(files, need) {
			t.Errorf(".funcignore drops %s, which the function build needs", need)
		}
	}
	t.Logf("func builds ship %d files", len(files))

	// Without .funcignore the whole repository goes in: the check above
	// would notice.
	all := funcBuildFiles(t, root, nil)
	if !slices.ContainsFunc(all, func(f string) bool { return !allowedInFuncBuild(f) }) {
		t.Errorf("without .funcignore func would ship only the function: the check is blind")
	}
}
