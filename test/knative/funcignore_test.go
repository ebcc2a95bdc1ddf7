package knative

import (
	"io/fs"
	"os/exec"
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

// functionSources lists the non-test Go files of every package of the
// repository's module the function (the root package) imports, directly or
// not, as go list sees them: what a func build must ship to compile.
func functionSources(t *testing.T, root string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-f", `{{if .Module}}{{if .Module.Main}}{{$dir := .Dir}}{{range .GoFiles}}{{$dir}}/{{.}}
{{end}}{{end}}{{end}}`, ".")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps of the function: %v", err)
	}
	var files []string
	for _, abs := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, abs)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, filepath.ToSlash(rel))
	}
	if !slices.Contains(files, "function/config/config.go") {
		t.Fatalf("go list -deps of the function lists no function/config/config.go: %q", files)
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
	need := append([]string{"go.mod", "go.sum", "handle.go"}, functionSources(t, root)...)
	for _, f := range need {
		if !slices.Contains(files, f) {
			t.Errorf(".funcignore drops %s, which the function build needs", f)
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
