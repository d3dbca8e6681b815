// Command bootstrap is the AWS Lambda entry point (provided.al2023).
package main

import (
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/shared/lambdahandler"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	lambda.Start(lambdahandler.New(functions.FromEnv(log), lambdahandler.Options{}))
}
