# Herald. The two commands a fresh machine needs: `make lab` and `make test`.
SHELL   := /bin/bash
GO      ?= go
LAB_DIR ?= $(CURDIR)/.lab
BIN     := $(CURDIR)/bin
# Herald's version is written in one place, the chart's appVersion: the
# binaries, the images and their tags take it from there.
VERSION := $(shell sed -n 's/^appVersion:[[:space:]]*"\{0,1\}\([^"]*\)"\{0,1\}[[:space:]]*$$/\1/p' charts/herald/Chart.yaml)
export LAB_DIR

include hack/generate.mk

.PHONY: all build version images test-images release-check lab lab-up lab-down lab-exec lab-bins realnode realnode-bins test unit e2e lint bench chaos soak clean

all: build

build:
	$(GO) build ./...

## version: Herald's version (the chart's appVersion)
version:
	@echo $(VERSION)

## images: the controller's and the speaker's images for linux/amd64 and linux/arm64, built without
## Docker: one OCI layout per image in bin/images (crane push bin/images/herald-controller REF)
images:
	$(GO) run ./hack/images -out $(BIN)/images

## test-images: build both images as make images does and inspect them: config, files, the amd64 binary's
## --version, the arm64 ELF, the chart's users, two builds one digest (not in make test: minutes cold)
test-images:
	HERALD_IMAGE_TEST=1 $(GO) test -count=1 -timeout 60m -v ./hack/images

## release-check: the chart's version, appVersion, image tags (values, config/herald.yaml, bin/images)
## and CRDs agree (TAG=v1.2.3: and the git tag being released)
release-check: helm
	@bash hack/render-manifests.sh --check
	$(GO) run ./hack/releasecheck -images $(BIN)/images -tag "$(TAG)"

## lab-bins: build the pinned kube-apiserver, kube-controller-manager, kube-proxy, kubectl and etcd (once per pin)
lab-bins:
	@bash e2etest/tools/build.sh

## realnode: only the real-node tests: a real kubelet and containerd in a network namespace, pods and the chart
## (with the images make images builds) on them (needs root, runc, containernetworking-plugins; make test runs them too)
realnode:
	@bash hack/realnode.sh

## realnode-bins: build the pinned kubelet, containerd, its runc shim and ctr (once per pin)
realnode-bins:
	@bash e2etest/tools/build.sh realnode

$(BIN)/lab: $(shell find e2etest/lab e2etest/cmd e2etest/herald -name '*.go') go.mod
	$(GO) build -o $@ ./e2etest/cmd/lab

## lab: bring up the lab, install Herald from the chart, run the demo, stay up until Ctrl-C (ONESHOT=1: run the demo once and exit)
lab: lab-bins helm $(BIN)/lab
	$(BIN)/lab demo

## lab-up / lab-down: the lab in the background, with Herald installed (HERALD=0: without); kubeconfig at .lab/kubeconfig
lab-up: lab-bins helm $(BIN)/lab
	@rm -f $(LAB_DIR)/ready; mkdir -p $(LAB_DIR)
	@setsid $(BIN)/lab up > $(LAB_DIR)/lab.log 2>&1 < /dev/null & \
	for i in $$(seq 1 900); do \
	  if [ -f $(LAB_DIR)/ready ]; then cat $(LAB_DIR)/lab.log; exit 0; fi; \
	  if ! kill -0 $$! 2>/dev/null; then cat $(LAB_DIR)/lab.log; exit 1; fi; \
	  sleep 0.1; \
	done; cat $(LAB_DIR)/lab.log; exit 1

lab-down: $(BIN)/lab
	$(BIN)/lab down

## lab-exec NS=client CMD='curl -s http://...': run a command in a lab namespace
lab-exec: $(BIN)/lab
	$(BIN)/lab exec $(NS) sh -c '$(CMD)'

## test: static checks, unit tests, then the end-to-end suite in the lab (needs root)
test: lint unit e2e

lint: verify-generated helm
	@bash hack/render-manifests.sh --check
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit: helm lab-bins
	@pkgs=$$($(GO) list ./... | grep -v /e2etest); \
	if [ -z "$$pkgs" ]; then echo "no unit-test packages yet"; else set -x; $(GO) test -race -count=1 $$pkgs; fi

# The e2e packages share one lab (fixed namespace names), so they run one at a time.
e2e: lab-bins realnode-bins helm
	set -o pipefail; mkdir -p $(LAB_DIR); HERALD_REALNODE=1 $(GO) test -count=1 -p 1 -timeout 30m -v ./e2etest/... 2>&1 | tee $(LAB_DIR)/e2e.log

## chaos: the chaos cases and the ARP/NDP floods at full length (faults with steady traffic; `make test`
## runs their short versions), printing `bench:` lines
chaos: lab-bins helm
	set -o pipefail; mkdir -p $(LAB_DIR); HERALD_CHAOS=full $(GO) test -count=1 -p 1 -timeout 60m -v -run '^(TestChaos|TestFlood)' ./e2etest/ 2>&1 | tee $(LAB_DIR)/chaos.log

## soak: $(SOAK) (default 30m) of churn at 20 changes/s on announced Services,
## the controller's and speakers' memory, goroutines and open files sampled
## every 10 s (fails on growth beyond noise), printing `bench:` lines
SOAK ?= 30m
soak: lab-bins helm
	set -o pipefail; mkdir -p $(LAB_DIR); HERALD_CHAOS=full HERALD_SOAK=$(SOAK) $(GO) test -count=1 -p 1 -timeout 120m -v -run '^TestSoak$$' ./e2etest/ 2>&1 | tee $(LAB_DIR)/soak.log

## bench: the controller's, the layer-2, the speaker-scale, BGP and dataplane benchmarks, each in its own lab
## (BENCH=cold|warm|single|rss|writes|restart for the controller, failover|create for layer 2,
## scale for the speaker at 10,000 Services and 50 nodes, bgp for BGP with FRR and BIRD,
## dataplane for the speaker's dataplane at 10,000 Services beside kube-proxy;
## BENCH_ARGS passes flags, e.g. -only nodes)
bench: lab-bins helm
	@case "$(BENCH)" in \
	  failover|create) $(GO) run ./e2etest/cmd/l2bench -only $(BENCH) $(BENCH_ARGS) ;; \
	  scale) $(GO) run ./e2etest/cmd/scalebench $(BENCH_ARGS) ;; \
	  bgp) $(GO) run ./e2etest/cmd/bgpbench $(BENCH_ARGS) ;; \
	  dataplane) $(GO) run ./e2etest/cmd/dpbench $(BENCH_ARGS) ;; \
	  "") $(GO) run ./e2etest/cmd/bench && $(GO) run ./e2etest/cmd/l2bench && $(GO) run ./e2etest/cmd/scalebench && $(GO) run ./e2etest/cmd/bgpbench && $(GO) run ./e2etest/cmd/dpbench ;; \
	  *) $(GO) run ./e2etest/cmd/bench -only $(BENCH) $(BENCH_ARGS) ;; \
	esac

## fuzz: every Go fuzz target in turn for $(FUZZTIME) (default 20s) each, at nice 19 with one
## worker, printing `bench: fuzz_<package>_<target>_execs|_seconds` lines; `make test` runs the seeds
FUZZTIME ?= 20s
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) bash hack/fuzz.sh

clean: lab-down
	rm -rf $(BIN)

## helm: the pinned helm in bin/, installed when missing or another version (chart tests, hack/render-manifests.sh)
HELM_VERSION ?= v3.22.0
.PHONY: helm
helm:
	@$(GO) version -m $(BIN)/helm 2>/dev/null | grep -Eq 'mod[[:space:]]+helm.sh/helm/v3[[:space:]]+$(HELM_VERSION)[[:space:]]' || \
		GOBIN=$(BIN) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
