//go:build noaws

package sink

import "fmt"

// The Azure handler is built with the noaws tag: Amazon S3 and the AWS SDK
// are left out. The SDK's package initialisation and size made the process
// start about 3 ms later (8.9 ms median against 6.5 here), and an Azure
// Function App exports to Blob Storage; the Lambda bootstrap has S3.

// NewS3Sink says that this build has no S3 sink, and what to do.
func NewS3Sink(bucket, prefix string, o S3Options) (Sink, error) {
	return nil, fmt.Errorf("EXPORT_SINK=s3://%s/%s: this handler was built without Amazon S3 (the noaws tag keeps the AWS SDK out of the Azure package); export to Azure Blob Storage, or build the handler without -tags noaws", bucket, prefix)
}
