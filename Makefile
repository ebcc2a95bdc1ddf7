# mutator — see README.md and docs/development.md. `make help` lists the targets.

SHELL := /usr/bin/env bash
GO ?= go
BIN := bin/mutator
# Control-plane binaries for the end-to-end tests: KUBE_ASSETS wins, else they
# are built once into a git-ignored cache.
KUBE_ASSETS ?= $(CURDIR)/.cache/kube-bin
export KUBE_ASSETS

# The example configuration `make run` uses.
RUN_ENV := REGISTRY=registry.example.com/mirror IMAGE_PULL_SECRET=regcred \
	FORCE_IMAGE_PULL_POLICY=true IMAGE_PULL_POLICY_TO_FORCE=IfNotPresent \
	DEFAULT_STORAGE_CLASS=standard EXCLUDE_NAMESPACES=kube-system \
	IGNORED_REGISTRIES=registry.k8s.io PORT=8080 METRICS_PORT=9095 LOG_LEVEL=debug WARNINGS=true

.PHONY: help build run generate verify test test-unit test-bounds test-e2e test-knative test-helm test-cluster test-bin lint bench load soak fuzz image image-docker deploy deploy-knative undeploy undeploy-knative clean

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# Stamped into the binary: `mutator version` and its start log line.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -X github.com/mutator-dev/mutator/function/version.version=$(VERSION) -X github.com/mutator-dev/mutator/function/version.commit=$(COMMIT)

build: ## build bin/mutator (version-stamped)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/mutator

run: build ## run the webhook on port 8080 (all interfaces, plain HTTP) with an example configuration
	@echo "mutator on http://localhost:8080 (all interfaces; metrics on :9095). In another terminal:"
	@echo "  curl -s -H 'Content-Type: application/json' --data @test/testdata/pod-review.json http://localhost:8080/mutate"
	@echo "The answer's \"warnings\" say in words what changed (WARNINGS=true). To read the JSON patch"
	@echo "itself, which is base64 in the answer (jq extracts it):"
	@echo "  curl -s -H 'Content-Type: application/json' --data @test/testdata/pod-review.json http://localhost:8080/mutate | jq -r .response.patch | base64 -d"
	@echo
	$(RUN_ENV) ./$(BIN) serve

generate: ## rewrite the derived files (hack/generate): deploy/standalone from the Helm chart; the values schema's config and docs/configuration.md's table from config.Settings(); the shipped admission policies
	@echo "== generate ($$(date +%T)); a cold run compiles Helm's SDK first"
	cd hack/generate && $(GO) run . -root ../..

verify: ## fail, listing them, if derived files are stale (what make generate would change); the generator's own tests
	@echo "== verify ($$(date +%T)); a cold run compiles Helm's SDK first"
	cd hack/generate && $(GO) test -count=1 ./... && $(GO) run . -root ../.. -check

test: lint verify test-unit test-bounds test-e2e test-knative test-helm test-cluster ## everything CI runs

lint: ## gofmt, go vet, golangci-lint (pinned, built once) and go mod tidy -diff on every module
	@echo "== lint ($$(date +%T))"
	GO=$(GO) bash hack/tools/lint.sh

test-unit: ## unit tests with the race detector, and short fuzz runs (the soak and load suites are behind build tags: test-bounds)
	@echo "== unit tests ($$(date +%T))"
	@# function/policy's CEL comparisons run in one goroutine: the race
	@# detector finds nothing there and makes them 6 times slower (197 s).
	$(GO) test -count=1 -race $$($(GO) list ./... | grep -v -e /test/e2e -e '/function/policy$$')
	$(GO) test -count=1 ./function/policy/
	@# A count, not a duration: Go 1.26's fuzz coordinator can fail a target
	@# with a bare "context deadline exceeded" at the end of a -fuzztime
	@# duration on a loaded machine (go.dev/issue/75804, fixed in 1.27).
	@$(MAKE) --no-print-directory fuzz FUZZTIME=10000x

test-bounds: ## memory, drain and restart bounds of the built binary under floods (build tag soak), and the load tool's own tests (tag load)
	@echo "== bounds ($$(date +%T))"
	$(GO) test -count=1 -tags soak,load ./test/soak/ ./test/load/

test-e2e: test-bin ## end-to-end tests against a real kube-apiserver and etcd
	@echo "== end-to-end tests ($$(date +%T))"
	$(GO) test -count=1 -timeout 15m ./test/e2e/...

test-knative: ## Knative packaging: Service and func.yaml validation, the function behind the real queue-proxy, the ko image, func deploy parity
	@echo "== Knative tests ($$(date +%T)); a cold run builds queue-proxy and ko first"
	cd test/knative && $(GO) test -count=1 -timeout 25m ./...

test-helm: test-bin ## Helm chart: lint, render, schema, dry run + install/upgrade/uninstall on the e2e kube-apiserver
	@echo "== Helm chart tests ($$(date +%T)); a cold run compiles Helm's SDK first"
	cd test/helm && $(GO) test -count=1 -timeout 15m ./...

NODE_ASSETS ?= $(CURDIR)/.cache/node-bin
test-cluster: test-bin ## a real node (kubelet, containerd, runc) in namespaces of its own pulls what the mutator admitted from a TLS + auth mirror; root only
	@echo "== cluster tests ($$(date +%T))"
	@if [ "$$(id -u)" != 0 ]; then \
	  echo "test-cluster: skipped: needs root (it creates network, mount and PID namespaces and runs a kubelet)"; \
	else \
	  knative_assets="$${KNATIVE_ASSETS:-$(CURDIR)/.cache/knative/cluster}" && \
	  bash hack/tools/node-bin.sh "$(NODE_ASSETS)" && \
	  bash hack/tools/knative-bin.sh "$$knative_assets" && \
	  cd test/cluster && NODE_ASSETS="$(NODE_ASSETS)" KNATIVE_ASSETS="$$knative_assets" $(GO) test -count=1 -v -timeout 20m ./...; \
	fi

test-bin: ## build kube-apiserver, kubectl and etcd into KUBE_ASSETS if missing
	@if [ -x "$(KUBE_ASSETS)/kube-apiserver" ] && [ -x "$(KUBE_ASSETS)/etcd" ] && [ -x "$(KUBE_ASSETS)/kubectl" ]; then \
	  echo "control-plane binaries in $(KUBE_ASSETS)"; \
	else bash hack/tools/build.sh "$(KUBE_ASSETS)"; fi

FUZZTIME ?= 60s
fuzz: ## run each fuzz target for FUZZTIME (default 60s; a count such as 10000x also works)
	@set -e; for pkg in $$($(GO) list ./function/...); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$target in $$pkg for $(FUZZTIME) ($$(date +%T); the first run of a package compiles it with coverage instrumentation)"; \
	    $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg; \
	  done; \
	done

bench: ## Go benchmarks (-count 3)
	$(GO) test -run '^$$' -bench . -benchmem -count 3 ./function/...

IMAGE_REPO ?= $(KO_DOCKER_REPO)
image: ## build and push the function image with ko, no Docker (IMAGE_REPO=registry/path; ko.local loads it into Docker)
	cd test/knative && $(GO) run ./cmd/image -repo "$(IMAGE_REPO)" $(if $(PLATFORMS),-platform $(PLATFORMS))

IMAGE ?= ghcr.io/mutator-dev/mutator:latest
image-docker: ## build the standalone image from the Dockerfile (needs a Docker engine)
	docker build -t $(IMAGE) .

deploy: ## apply the standalone manifests to the current kubectl context
	kubectl apply -k deploy/standalone

deploy-knative: ## apply the Knative manifests to the current kubectl context
	kubectl apply -k deploy/knative

undeploy: ## remove the webhook configuration first, then the standalone manifests
	kubectl delete mutatingwebhookconfiguration mutator --ignore-not-found
	kubectl delete -k deploy/standalone --ignore-not-found

undeploy-knative: ## remove the webhook configuration first, then the Knative manifests
	kubectl delete mutatingwebhookconfiguration mutator --ignore-not-found
	kubectl delete -k deploy/knative --ignore-not-found

clean: ## remove build outputs (keeps the control-plane cache)
	rm -rf bin

load: ## load test over HTTP/1.1 keep-alive: bin/mutator and a floor server on loopback with TLS; 8 workers closed loop, then 1000 req/s, 10 s each; CPU per review vs the floor
	GO=$(GO) bash test/load/run.sh

SOAK_DURATION ?= 60s
SOAK_RATE ?= 1000
soak: build ## long soak: SOAK_RATE req/s (default 1000) for SOAK_DURATION (default 60s); zero errors, bounded RSS
	MUTATOR_BIN=$(CURDIR)/$(BIN) SOAK_DURATION=$(SOAK_DURATION) SOAK_RATE=$(SOAK_RATE) \
	  $(GO) test -count=1 -v -tags soak -run '^TestSoak$$' -timeout 30m ./test/soak/
