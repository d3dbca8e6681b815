#!/bin/sh
# Installs what the tests need beyond Go, pinned, from Debian's packages:
# curl and python3 run the original guide's own sample clients.
set -eu
missing=""
command -v curl >/dev/null 2>&1 || missing="$missing curl"
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
if [ -n "$missing" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "install-tools: please install:$missing" >&2
		exit 1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi
