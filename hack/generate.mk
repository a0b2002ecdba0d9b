# Code and manifest generation for api/ with controller-gen.
#
# Included by the root Makefile; run from the repository root:
#   make generate    # api/v1alpha1/zz_generated.deepcopy.go
#   make manifests   # config/crd/bases/*.yaml
#   make verify-generated   # fails if either is stale (for CI)

CONTROLLER_GEN_VERSION ?= v0.23.0
LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen

.PHONY: generate manifests verify-generated controller-gen

generate: controller-gen
	$(CONTROLLER_GEN) object paths=./api/...

manifests: controller-gen
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd/bases

verify-generated: generate manifests
	@git diff --exit-code -- api config/crd || { echo "generated files are stale: run make generate manifests and commit the result" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- api config/crd | grep '^??')" || { echo "generated files are not committed:" >&2; git status --porcelain -- api config/crd >&2; exit 1; }

# Reinstall when the binary is missing or is another version than the one pinned.
controller-gen:
	@$(CONTROLLER_GEN) --version 2>/dev/null | grep -qx 'Version: $(CONTROLLER_GEN_VERSION)' || \
		GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
