// Package build is how the shipped binaries are built: their flags and
// tags in one place, for pack, which writes the deployables, and for the
// tests that prove those binaries (the kill matrices, the local host, the
// Lambda emulator), so that what is proven is what ships.
package build

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
)

// The shipped binaries' packages and build tags. grpcnotrace leaves out
// grpc's x/net/trace (the OTLP exporters import grpc), whose html/template
// turns off the linker's dead-code removal for the whole binary: the
// handler is 17.6 MB with it and 25.7 MB without. noaws leaves the AWS SDK
// out of the Azure handler (shared/sink/s3_noaws.go says why);
// lambda.norpc leaves out aws-lambda-go's RPC mode, which provided.al2023
// does not use.
const (
	Handler    = "./functions/cmd/handler"
	Bootstrap  = "./functions/cmd/bootstrap"
	AzureTags  = "noaws grpcnotrace"
	LambdaTags = "lambda.norpc grpcnotrace"
)

// Command is the go build of pkg (relative to the repository root) into out
// as it ships: static, stripped, trimmed paths, with tags.
func Command(root, out, pkg, goos, goarch, tags string) *exec.Cmd {
	cmd := exec.Command("go", "build", "-trimpath", "-tags", tags, "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
	return cmd
}

// Local builds pkg as it ships, for this machine (a test's or make run's);
// the error carries the compiler's output.
func Local(root, out, pkg, tags string) error {
	if b, err := Command(root, out, pkg, runtime.GOOS, runtime.GOARCH, tags).CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %w\n%s", pkg, err, b)
	}
	return nil
}
