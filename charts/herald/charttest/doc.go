// Package charttest holds the tests of the Helm chart in charts/herald: they
// run helm lint and helm template for several value sets and check the
// rendered objects against Herald's security rules (no RBAC wildcards, Secrets
// only in Herald's namespace, a non-root controller on a read-only root file
// system, a speaker with NET_ADMIN and NET_RAW only) and against the other
// sources they must agree with (config/crd/bases, config/webhook,
// config/herald.yaml). They need helm ($HELM, or bin/helm from `make helm`),
// no cluster.
package charttest
