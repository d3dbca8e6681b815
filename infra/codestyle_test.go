package infra_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/defender-functions/defender-functions/infra/local/emulators"
)

// The shipped code (functions/ and shared/) keeps the shape a newcomer can
// read: no file over 500 lines, no function over 80, and log lines in one
// style: the message a sentence (a capital first, a full stop last), the
// error under the key "err".
func TestShippedCodeStyle(t *testing.T) {
	const maxFile, maxFunc = 500, 80
	fset := token.NewFileSet()
	repo := emulators.RepoRoot(t)
	for _, root := range []string{filepath.Join(repo, "functions"), filepath.Join(repo, "shared")} {
		err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			if n := fset.File(f.Pos()).LineCount(); n > maxFile {
				t.Errorf("%s: %d lines (at most %d): split it along its concepts", path, n, maxFile)
			}
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.FuncDecl:
					if l := fset.Position(n.End()).Line - fset.Position(n.Pos()).Line + 1; l > maxFunc {
						t.Errorf("%s: %s is %d lines (at most %d)", fset.Position(n.Pos()), n.Name.Name, l, maxFunc)
					}
				case *ast.CallExpr:
					checkLogCall(t, fset, n)
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// checkLogCall checks a call of a slog method: Info(msg, args...),
// InfoContext(ctx, msg, args...) or Log(ctx, level, msg, args...).
func checkLogCall(t *testing.T, fset *token.FileSet, call *ast.CallExpr) {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok {
		return
	}
	first := 0
	switch sel.Sel.Name {
	case "Debug", "Info", "Warn", "Error":
	case "DebugContext", "InfoContext", "WarnContext", "ErrorContext":
		first = 1
	case "Log", "LogAttrs": // Log(ctx, level, msg, args...)
		first = 2
	default:
		return
	}
	if len(call.Args) <= first {
		return
	}
	// Error and friends on other types (an error's Error(), a field) take
	// no message: only calls whose message is text are log lines.
	msg, ok := literal(call.Args[first])
	if !ok {
		if _, isBin := call.Args[first].(*ast.BinaryExpr); !isBin {
			return
		}
		// A message built from parts: its last part ends it.
		bin := call.Args[first].(*ast.BinaryExpr)
		if msg, ok = literal(bin.Y); !ok {
			return
		}
		msg = "X" + msg
	}
	pos := fset.Position(call.Pos())
	if r := []rune(msg); len(r) == 0 || !unicode.IsUpper(r[0]) && !unicode.IsDigit(r[0]) && r[0] != '$' && r[0] != '@' || !strings.HasSuffix(msg, ".") {
		t.Errorf("%s: log message %q is not a sentence (a capital first, a full stop last)", pos, msg)
	}
	for i := first + 1; i < len(call.Args); i += 2 {
		if k, ok := literal(call.Args[i]); ok && (k == "error" || k == "cause") {
			t.Errorf("%s: the error is logged as %q: use \"err\"", pos, k)
		}
	}
}

func literal(e ast.Expr) (string, bool) {
	bl, ok := e.(*ast.BasicLit)
	if !ok || bl.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(bl.Value)
	return s, err == nil
}
