// Command bootstrap is the AWS Lambda entry point (provided.al2023).
package main

import (
	"context"
	"io"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/functions/doctor"
	"github.com/defender-functions/defender-functions/shared/lambdahandler"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	// No SIGTERM handler (lambda.WithEnableSIGTERM): each invocation flushes
	// its telemetry before it answers, so the sandbox's end finds nothing
	// pending but what a flush cut short at its bound (docs/telemetry.md).
	lambda.Start(lambdahandler.New(functions.FromEnv(log), lambdahandler.Options{
		// aws lambda invoke --payload '{"source":"doctor"}': the preflight as
		// the function itself, whose identity no operator's machine has
		// (DefenderCredential=aws-federation), docs/doctor.md.
		Doctor: func(ctx context.Context, w io.Writer) bool { return doctor.Run(ctx, os.LookupEnv, w, nil) },
	}))
}
