#!/bin/sh
# Installs what the tests need beyond Go, pinned, from Debian's packages:
# curl and python3 run the original guide's own sample clients; cfn-lint
# lints the SAM template (pip's is newer, where PyPI is reachable).
# With the argument "node", only Azurite and s3rver (make run SINK=blob|s3).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ "${1:-}" != node ]; then
missing=""
command -v curl >/dev/null 2>&1 || missing="$missing curl"
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
# cfn-lint (with AWS's SAM translator) checks infra/aws/template.yaml.
command -v cfn-lint >/dev/null 2>&1 || missing="$missing cfn-lint"
if [ -n "$missing" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "install-tools: please install:$missing" >&2
		exit 1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi

# The AWS Lambda Runtime Interface Emulator, pinned (its tags are not semver,
# so the module proxy serves a pseudo-version), into .tools/.
RIE_VERSION=v0.0.0-20261030222936-bef5c4ba774d
if [ ! -x "$ROOT/.tools/aws-lambda-rie" ] || [ "$(cat "$ROOT/.tools/aws-lambda-rie.version" 2>/dev/null)" != "$RIE_VERSION" ]; then
	mkdir -p "$ROOT/.tools"
	GOBIN="$ROOT/.tools" go install "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@$RIE_VERSION"
	echo "$RIE_VERSION" > "$ROOT/.tools/aws-lambda-rie.version"
fi

fi

# Azurite (Azure Blob Storage) and s3rver (Amazon S3), pinned, from npm.
AZURITE_VERSION=3.37.0
S3RVER_VERSION=3.7.1
if [ "$(cat "$ROOT/.tools/node.versions" 2>/dev/null)" != "azurite@$AZURITE_VERSION s3rver@$S3RVER_VERSION" ]; then
	command -v npm >/dev/null 2>&1 || { echo "install-tools: Node.js 20 with npm is required" >&2; exit 1; }
	mkdir -p "$ROOT/.tools/node"
	npm install --prefix "$ROOT/.tools/node" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" "s3rver@$S3RVER_VERSION"
	echo "azurite@$AZURITE_VERSION s3rver@$S3RVER_VERSION" > "$ROOT/.tools/node.versions"
fi
