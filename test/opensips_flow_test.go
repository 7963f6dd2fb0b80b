package test

import (
	"testing"
)

// The end-to-end flows of proxy_flows_test.go through a real OpenSIPS 3.4
// running the shipped adapters/opensips/opensips.cfg.

// TestOpenSIPSSeedFlow: the seed's flow and its two encapsulations, the
// session-mode message stored through deferpush's SIP ingress, INVITE, ACK
// and BYE through OpenSIPS.
func TestOpenSIPSSeedFlow(t *testing.T) { flowSeed(t, opensipsStarter(t, stackOptions{})) }

// TestOpenSIPSPushToAOR: with push_target aor, OpenSIPS looks the AOR up
// (route FROM_DEFERPUSH) before relaying deferpush's INVITE.
func TestOpenSIPSPushToAOR(t *testing.T) { flowPushToAOR(t, opensipsStarter) }

// TestOpenSIPSLargeMessage: a 60 KB MESSAGE stored through OpenSIPS's
// rest_client and pushed intact in MSRP chunks.
func TestOpenSIPSLargeMessage(t *testing.T) {
	flowLargeMessage(t, opensipsStarter(t, stackOptions{}))
}

// TestOpenSIPSHookRefusals: the hook's refusals reach the sender as the
// SIP replies they map to (500 wrong token, 480 unreachable, 513, 480 full).
func TestOpenSIPSHookRefusals(t *testing.T) { flowHookRefusals(t, opensipsStarter) }

// TestOpenSIPSFailureRouteStores: a MESSAGE to a registered contact that
// never answers is stored by failure_route[MESSAGE_FAILED].
func TestOpenSIPSFailureRouteStores(t *testing.T) { flowFailureRouteStores(t, opensipsStarter) }

// TestOpenSIPSNotBlockedBySlowHook: launch() posts the registration hook
// without holding the SIP worker, so a slow deferpush does not slow
// REGISTER.
func TestOpenSIPSNotBlockedBySlowHook(t *testing.T) { flowNotBlockedBySlowHook(t, opensipsStarter) }

// TestOpenSIPSUnregisterCancelsPush: E_UL_CONTACT_DELETE reaches deferpush
// as /unregistered and cancels the push in progress.
func TestOpenSIPSUnregisterCancelsPush(t *testing.T) { flowUnregisterCancelsPush(t, opensipsStarter) }

// TestOpenSIPSUnreachableContactStores: a MESSAGE to a registered TCP
// contact that refuses the connection cannot be relayed at all (no branch,
// so no failure_route); the script stores it instead of answering 477.
func TestOpenSIPSUnreachableContactStores(t *testing.T) {
	flowUnreachableContactStores(t, opensipsStarter(t, stackOptions{}))
}

// TestOpenSIPSCaseMismatch: flowCaseMismatch through OpenSIPS.
func TestOpenSIPSCaseMismatch(t *testing.T) { flowCaseMismatch(t, opensipsStarter) }

// TestOpenSIPSPushOnlyToItsContact: flowPushOnlyToItsContact through
// OpenSIPS.
func TestOpenSIPSPushOnlyToItsContact(t *testing.T) { flowPushOnlyToItsContact(t, opensipsStarter) }
