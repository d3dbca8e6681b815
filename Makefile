# Defender Functions. `make run` shows the product on the offline devstack;
# `make test` runs every test. Everything they need is installed by them.

SHELL   := /bin/bash
GO      ?= go
LOCAL   ?= .local
PKGS    := ./...
# Every go run shares one build configuration with the binaries pack builds
# (no cgo, trimmed paths), so a cold first run compiles each package once.
GORUN   := CGO_ENABLED=0 $(GO) run -trimpath
# The local commands are built, then run: go run says nothing while a cold
# first build compiles for minutes, and exits 1 when interrupted (make
# would call a clean Ctrl-C stop an error).
GOBUILD := CGO_ENABLED=0 $(GO) build -trimpath -o $(LOCAL)/bin/
# $(call build,path): one line before and one after, with the time taken.
build = @s=$$(date +%s%N); echo "build: $(1) …"; $(GOBUILD) ./$(1) && \
	awk -v s=$$s -v e=$$(date +%s%N) 'BEGIN { printf "build: $(1) in %.1fs\n", (e - s) / 1e9 }'
# The secrets audit's directory: what the devstacks issued and every log the tests captured.
AUDIT   := $(LOCAL)/audit

.PHONY: run test vet hygiene fuzz chaos bench devstack doctor build package clean tools node-tools

# Fuzz targets: package and name. `make test` runs each for FUZZTIME; the
# seed corpora under testdata/fuzz run with every plain `go test`. FUZZTIME
# is a count of inputs, not a duration: Go 1.26's fuzzing coordinator can
# fail a duration-bounded run at its deadline with "context deadline
# exceeded" and no failing input (go.dev/issue/75804, fixed in Go 1.27).
FUZZ     := ./shared/webhook:FuzzVerifyStandard ./shared/webhook:FuzzVerifyHub \
            ./functions/ticket-webhook:FuzzParseJira ./functions/ticket-webhook:FuzzParseServiceNow \
            ./functions/ticket-webhook:FuzzParseGeneric
FUZZTIME ?= 20000x

# make run builds only what it runs, for this machine: the Function App in
# $(LOCAL)/app (make build writes the deployables to dist/). SINK chooses
# where the export goes (file, blob, s3, logs, splunk) and LAYOUT how
# (versions, batches). Blob and S3 run on Azurite and s3rver, installed
# from npm on first use; s3 needs the handler with the AWS SDK, which the
# Azure package leaves out (noaws).
SINK    ?= file
LAYOUT  ?= versions
run: $(if $(filter blob s3,$(SINK)),node-tools)
	$(call build,infra/pack)
	$(LOCAL)/bin/pack -local -out $(LOCAL)/app
	$(if $(filter s3,$(SINK)),CGO_ENABLED=0 $(GO) build -trimpath -tags grpcnotrace -o $(LOCAL)/app/azure/handler ./functions/cmd/handler)
	$(call build,infra/local/cmd/run)
	rm -rf $(LOCAL)/export $(LOCAL)/state
	$(LOCAL)/bin/run -dir $(LOCAL) -app $(LOCAL)/app/azure -sink $(SINK) -layout $(LAYOUT) $(RUN_ARGS)

devstack:
	$(call build,infra/local/cmd/devstack)
	$(LOCAL)/bin/devstack -dir $(LOCAL) $(DEVSTACK_ARGS)

# The preflight. A running `make devstack` or `make run RUN_ARGS=-serve`
# writes its settings to $(LOCAL)/devstack.env: they are loaded over the
# environment when the file exists (delete it to check your own settings),
# unless DOCTOR_ARGS names a settings file (docs/doctor.md).
doctor:
	$(call build,functions/cmd/doctor)
	@if [ -f $(LOCAL)/devstack.env ] && [[ " $(DOCTOR_ARGS)" != *" -settings"* ]]; then \
		echo "doctor: with the devstack's settings from $(LOCAL)/devstack.env"; \
		set -a; . ./$(LOCAL)/devstack.env; set +a; fi; \
		$(LOCAL)/bin/doctor $(DOCTOR_ARGS)

vet:
	$(GO) vet $(PKGS)
	$(GO) vet -tags noaws ./shared/sink ./shared/awssecret ./shared/awsidentity
	$(GO) vet -tags "noaws grpcnotrace" ./functions/cmd/handler ./shared/telemetry

tools:
	./infra/local/install-tools.sh

# Azurite and s3rver only (make run SINK=blob or s3).
node-tools:
	./infra/local/install-tools.sh node

# A tidy module, formatted code, and nothing large tracked (a built binary
# was committed once).
hygiene:
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }
	@unformatted=$$("$$($(GO) env GOROOT)/bin/gofmt" -l functions shared infra internal); \
		if [ -n "$$unformatted" ]; then echo "not gofmt-ed (run gofmt -w):"; echo "$$unformatted"; exit 1; fi
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
		big=$$(git ls-files -z | xargs -0 -r stat -c '%s %n' 2>/dev/null | awk '$$1 > 1048576 {print $$2 " (" $$1 " bytes)"}'); \
		if [ -n "$$big" ]; then echo "tracked files over 1 MB (built output does not belong in git):"; echo "$$big"; exit 1; fi; \
	fi

test: hygiene vet tools
	rm -rf $(AUDIT) && mkdir -p $(AUDIT)
	set -o pipefail; DEVSTACK_AUDIT_DIR=$(abspath $(AUDIT)) $(GO) test -race -count=1 -timeout 30m $(PKGS) 2>&1 | tee $(AUDIT)/go-test-output.txt
	$(GO) run ./infra/local/cmd/audit $(AUDIT)
	# The telemetry as it ships: grpc without x/net/trace (infra/build).
	$(GO) test -count=1 -tags grpcnotrace ./shared/telemetry
	rm -rf $(AUDIT)
	$(MAKE) fuzz

# Minimization is capped: on inputs of a few KB it would otherwise take the
# whole run (Go's default is 60 s per new input).
fuzz:
	@for t in $(FUZZ); do \
		echo "fuzz $${t#*:} ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 0.5s "$${t%%:*}" || exit 1; \
	done

# The resilience suite at CHAOS_SCALE times the size make test runs it at: the export's
# kill/fault matrix, outages and rotation under load, the HTTP functions under load; then
# every fuzz target on 250,000 inputs (about a minute for the slowest).
CHAOS_SCALE ?= 4
chaos: tools
	CHAOS_SCALE=$(CHAOS_SCALE) $(GO) test -count=1 -timeout 90m -run 'TestExactlyOnceUnderKills' ./functions/incident-export/
	CHAOS_SCALE=$(CHAOS_SCALE) $(GO) test -race -count=1 -timeout 30m ./infra/chaos/
	$(MAKE) fuzz FUZZTIME=250000x

# Every benchmark in one run, then docs/benchmarks.md (figures beside goals) and its charts.
bench: tools
	$(GO) run ./infra/bench -out docs

build:
	$(call build,infra/pack)
	$(LOCAL)/bin/pack -out dist

package:
	$(call build,infra/pack)
	$(LOCAL)/bin/pack -out dist -zip

clean:
	rm -rf dist $(LOCAL)
