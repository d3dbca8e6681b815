// Command pack assembles the deployables: dist/azure (the Function App:
// host.json, the handler, one folder per function with the function.json
// its descriptor declares)
// and its zip, and the Lambda zips (bootstrap at the root). It writes zips
// itself so the handler's exec bit survives on any OS (zips made on Windows
// lose it) and so nothing stray gets in. With -local it lays out only the
// Function App, its handler built for this machine, for make run.
package main

import (
	"archive/zip"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"time"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/infra/build"
)

func main() {
	root := flag.String("root", ".", "the repository root")
	out := flag.String("out", "dist", "output directory")
	var o options
	flag.BoolVar(&o.Zip, "zip", false, "also write dist/azure.zip and the Lambda zips")
	flag.BoolVar(&o.Local, "local", false, "only the Function App, its handler built for this machine (make run)")
	flag.Parse()
	if err := pack(*root, *out, o); err != nil {
		fmt.Fprintln(os.Stderr, "pack:", err)
		os.Exit(1)
	}
}

// options choose what pack writes.
type options struct {
	// Zip also writes the zips the platforms take.
	Zip bool
	// Local lays out only the Function App, its handler built for the
	// machine pack runs on (make run), not for the platforms.
	Local bool
}

// goBuild builds a static, stripped binary for goos/goarch. It says what it
// builds and how long it took: a cold first build takes minutes here.
func goBuild(root, out, pkg, goos, goarch, tags string) error {
	rel := out
	if r, err := filepath.Abs(root); err == nil {
		if p, err := filepath.Rel(r, out); err == nil {
			rel = p
		}
	}
	fmt.Printf("pack: building %s (%s/%s) …\n", rel, goos, goarch)
	start := time.Now()
	cmd := build.Command(root, out, pkg, goos, goarch, tags)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build %s: %w", pkg, err)
	}
	fmt.Printf("pack: built %s in %.1fs\n", rel, time.Since(start).Seconds())
	return nil
}

func pack(root, out string, o options) error {
	azure := filepath.Join(out, "azure")
	if err := os.RemoveAll(azure); err != nil {
		return err
	}
	if err := os.MkdirAll(azure, 0o755); err != nil {
		return err
	}
	if err := copyFile(filepath.Join(root, "host.json"), filepath.Join(azure, "host.json"), 0o644); err != nil {
		return err
	}
	// Each function's folder and function.json, from its descriptor.
	for _, d := range functions.Functions {
		fj, err := d.FunctionJSON()
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(azure, d.Name), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(azure, d.Name, "function.json"), fj, 0o644); err != nil {
			return err
		}
	}
	abs, _ := filepath.Abs(out)
	goos, goarch := "linux", "amd64"
	if o.Local {
		goos, goarch = runtime.GOOS, runtime.GOARCH
	}
	if err := goBuild(root, filepath.Join(abs, "azure", "handler"), build.Handler, goos, goarch, build.AzureTags); err != nil {
		return err
	}
	if o.Local {
		return nil
	}
	lambda := filepath.Join(out, "lambda")
	for _, arch := range []string{"arm64", "amd64"} {
		if err := goBuild(root, filepath.Join(abs, "lambda", arch, "bootstrap"), build.Bootstrap, "linux", arch, build.LambdaTags); err != nil {
			return err
		}
	}
	if !o.Zip {
		return nil
	}
	if err := zipDir(azure, filepath.Join(out, "azure.zip")); err != nil {
		return err
	}
	if err := zipDir(filepath.Join(lambda, "arm64"), filepath.Join(out, "lambda.zip")); err != nil {
		return err
	}
	return zipDir(filepath.Join(lambda, "amd64"), filepath.Join(out, "lambda-amd64.zip"))
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, mode)
}

// zipDir zips a directory's files with their modes, sorted, with a fixed time.
func zipDir(dir, dst string) error {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		return err
	}
	sort.Strings(files)
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	for _, p := range files {
		info, err := os.Stat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h, err := zip.FileInfoHeader(info)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		h.Method = zip.Deflate
		h.Modified = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		w, err := zw.CreateHeader(h)
		if err != nil {
			return err
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(w, src)
		src.Close()
		if err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Sync()
}
