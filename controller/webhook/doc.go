// Package webhook is Herald's validating admission webhook for the five
// herald.dev kinds, and the TLS it needs.
//
// # What it refuses
//
// CEL rules in the CRDs refuse what one object gets wrong on its own. The
// webhook refuses what is wrong only next to the other objects: a pool
// overlapping another pool, a BGPPeer repeating another's address and port, a
// BGPPeer naming a BFDProfile that does not exist. It reads every Herald
// object from the manager's cache, puts the proposed one in place of (or next
// to) the stored ones and asks model.Build, the same pure function the
// controller and the speaker judge the configuration with, with
// Input.Proposed set so the proposal never displaces an object in force. A
// refusal carries the model's message, which names the field
// ("spec.addresses[1]: 198.51.100.10 overlaps pool lan's spec.addresses[0] ...").
// What is allowed but suspicious, such as an advertisement naming a pool that
// does not exist (yet), comes back as a warning kubectl prints. Deletes are
// not checked, and an update that leaves the spec as stored is allowed (with
// a warning if the object is not in force), so labels and finalizers of an
// object made invalid by another change can still be edited.
//
// The cache may lag the API server by a moment, so two conflicting objects
// created at the same instant can both get in; the controller's model then
// refuses the younger one in its status, and the older stays in force.
//
// # Certificates, readiness and the install-time race
//
// There is no key in the repository or the chart. With
// Options.EnableCertRotation, cert-controller's rotator (the library MetalLB
// and Gatekeeper use) creates a CA and a serving cert for
// <ServiceName>.<Namespace>.svc plus Options.ExtraDNSNames, keeps both in a
// Secret in Herald's namespace, renews them before they expire, and writes the
// CA into the caBundle of every webhook of the ValidatingWebhookConfiguration.
// Setup creates the Secret, empty, if it is missing. A small syncer copies the
// Secret into CertDir (no Secret volume and no wait for kubelet's volume sync;
// it also works where the controller is not a pod, as in the lab), and the
// webhook server reads the cert from there on each new connection. The
// rotator checks only the Service's name, so when the cert lacks one of
// ExtraDNSNames (the option changed) the syncer removes it from the Secret
// and the rotator issues a new one under the same CA. Without rotation,
// whatever provides the cert (cert-manager, the chart) puts tls.crt, tls.key
// and, for readiness to verify against, ca.crt into CertDir.
//
// The rotator runs on every replica, not only on the leader
// (RequireLeaderElection false), because every replica runs the webhook
// server and the Service sends calls to any of them.
//
// The webhook configuration says failurePolicy: Fail, so invalid
// cross-object configuration never gets in while the webhook is down. The
// price is the well-known race right after install: the API server calls the
// webhook before it has a cert, or before the caBundle is injected, and the
// apply fails with "failed calling webhook". Readiness closes it: the check
// Setup returns passes only when the rotator has the cert in CertDir and the
// CA injected, the cache the handler reads has synced, and the server answers
// TLS on its port with a cert that the CA verifies for every DNS name. So the
// Deployment is Ready, and the Service has an endpoint, only once a call from
// the API server can succeed; `helm install --wait` and the end-to-end tests
// wait for that before applying Herald objects.
//
// # How main uses it
//
//	opts := webhook.Options{EnableCertRotation: true, ExtraDNSNames: ...}
//	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
//		Scheme:        scheme, // client-go's kinds and herald.dev's
//		WebhookServer: crwebhook.NewServer(webhook.ServerOptions(opts)),
//		...
//	})
//	ready, err := webhook.Setup(mgr, opts) // before mgr.Start
//	err = mgr.AddReadyzCheck("webhook", ready)
//	err = mgr.Start(ctx)
//
// ServerOptions must be used at manager creation (the webhook server cannot
// be reconfigured afterwards); Setup checks it was and returns an error
// otherwise.
//
// # Paths
//
// One webhook per kind in config/webhook/manifests.yaml, each at
// /validate-herald-dev-v1alpha1-<kind lowercased>, all served by one handler
// that judges by the request's kind. Status writes (the /status subresource)
// are not routed here, so the controller can always report why an object is
// not in force.
package webhook
