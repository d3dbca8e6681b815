# Defender Functions. `make run` shows the product on the offline devstack;
# `make test` runs every test. Everything they need is installed by them.

GO      ?= go
LOCAL   ?= .local
PKGS    := ./...

.PHONY: run test vet bench devstack build package clean tools

run: build
	rm -rf $(LOCAL)/export $(LOCAL)/state
	$(GO) run ./infra/local/cmd/run -dir $(LOCAL) -app dist/azure $(RUN_ARGS)

devstack:
	$(GO) run ./infra/local/cmd/devstack -dir $(LOCAL) $(DEVSTACK_ARGS)

vet:
	$(GO) vet $(PKGS)

tools:
	./infra/local/install-tools.sh

test: vet tools
	$(GO) test -race -count=1 -timeout 30m $(PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

build:
	$(GO) run ./infra/pack -out dist

package:
	$(GO) run ./infra/pack -out dist -zip

clean:
	rm -rf dist $(LOCAL)
