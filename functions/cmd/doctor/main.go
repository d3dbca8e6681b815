// Command doctor checks a deployment: configuration, Key Vault, tokens,
// roles, the API, storage. By default it runs with the functions' own
// settings (the environment) and identity, as on the host; from the
// operator's machine, -settings reads a deployed app's exported settings
// and -as-me reaches what the app reads with the operator's own sign-in.
// It exits 0 only when everything passes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/defender-functions/defender-functions/functions/doctor"
)

func main() {
	var rm doctor.Remote
	flag.StringVar(&rm.SettingsFile, "settings", "", "read the deployed app's settings from `FILE`, in place of the environment: the output of\n"+
		"  az functionapp config appsettings list -g <group> -n <app> -o json (Azure),\n"+
		"  aws lambda get-function-configuration --function-name <function> --output json (AWS),\n"+
		"a local.settings.json, or NAME=VALUE lines (values are never printed)")
	flag.BoolVar(&rm.AsOperator, "as-me", false, "reach Key Vault and Azure Storage with your own sign-in (az login, else azd auth login)\n"+
		"and AWS with the AWS SDK's profile (AWS_PROFILE, e.g. after aws sso login), not the app's identity")
	timeout := flag.Duration("timeout", 30*time.Second, "how long each check may take")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: doctor [-settings FILE] [-as-me] [-timeout 30s]\n\n"+
			"Checks a deployment of Defender Functions; exits 0 only when everything passes.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	if !doctor.RunRemote(context.Background(), os.LookupEnv, os.Stdout, rm, &doctor.Options{Timeout: *timeout}) {
		os.Exit(1)
	}
}
