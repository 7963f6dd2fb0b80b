package test

import "testing"

// TestKamailioSeedFlow is the seed's flow (flowSeed) through a real
// Kamailio running the shipped config.
func TestKamailioSeedFlow(t *testing.T) {
	flowSeed(t, kamailioStarter(t, stackOptions{}))
}

// TestKamailioPushToAOR: with push_target aor, deferpush INVITEs the AOR
// and Kamailio looks it up (route FROM_DEFERPUSH) before relaying.
func TestKamailioPushToAOR(t *testing.T) { flowPushToAOR(t, kamailioStarter) }

// TestKamailioUnregisterCancelsPush: an unregistration reported by
// Kamailio cancels the push in progress (flowUnregisterCancelsPush).
func TestKamailioUnregisterCancelsPush(t *testing.T) { flowUnregisterCancelsPush(t, kamailioStarter) }

// TestKamailioCaseMismatch: a client registered as "BoB" gets what was
// sent to "Bob", "bob" and "BOB" (flowCaseMismatch).
func TestKamailioCaseMismatch(t *testing.T) { flowCaseMismatch(t, kamailioStarter) }

// TestKamailioPushOnlyToItsContact: flowPushOnlyToItsContact through
// Kamailio.
func TestKamailioPushOnlyToItsContact(t *testing.T) { flowPushOnlyToItsContact(t, kamailioStarter) }
