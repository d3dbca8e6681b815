package build_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/defender-functions/defender-functions/infra/build"
	"github.com/defender-functions/defender-functions/infra/local/emulators"
)

// The shipped binaries link none of the packages that cost every start
// and that they never use: x/net/trace's html/template turns off the
// linker's dead-code removal (grpcnotrace keeps it out), and Apache Arrow,
// which azblob's container package links for a listing format, runs CPU
// probing and builds compression tables at start (state.Container keeps it
// out).
func TestShippedDependencies(t *testing.T) {
	unwanted := []string{"golang.org/x/net/trace", "html/template", "github.com/apache/arrow", "github.com/klauspost/cpuid",
		"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"}
	for _, bin := range []struct{ pkg, tags string }{{build.Handler, build.AzureTags}, {build.Bootstrap, build.LambdaTags}} {
		cmd := exec.Command("go", "list", "-deps", "-tags", bin.tags, bin.pkg)
		cmd.Dir = emulators.RepoRoot(t)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list %s: %v", bin.pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, u := range unwanted {
				if dep == u || strings.HasPrefix(dep, u+"/") {
					t.Errorf("%s (tags %q) links %s", bin.pkg, bin.tags, dep)
				}
			}
		}
	}
}
