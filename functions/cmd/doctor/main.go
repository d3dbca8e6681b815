// Command doctor checks a deployment with the functions' own settings (the
// environment): configuration, Key Vault, tokens, roles, the API, storage.
// It exits 0 only when everything passes.
package main

import (
	"context"
	"os"

	"github.com/defender-functions/defender-functions/functions/doctor"
)

func main() {
	if !doctor.Run(context.Background(), os.LookupEnv, os.Stdout, nil) {
		os.Exit(1)
	}
}
