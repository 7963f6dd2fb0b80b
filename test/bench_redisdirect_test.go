package test

// redisDirectMode is the shipped kamailio.cfg's Redis-direct mode (issue
// 14, items 2 and 3): Kamailio stores an offline MESSAGE with the store's
// Redis function library itself and reports registrations to deferpush
// through Redis, selected by an -A define, beside the HTTP hook and
// STORE_VIA_SIP. The bench measures it in the message rows and the
// registration rows like the other modes, on the run's redis-server.
//
// HOOK FOR THE BRANCH THAT BUILDS THE MODE: until it exists, Missing is
// "not built yet" and the report lists the mode's rows as not built, with
// no figure. That branch fills in, here only:
//   - Defines: the -A defines that select the mode and tell Kamailio where
//     Redis is (redisAddr is the run's redis-server, host:port), e.g.
//     {"STORE_VIA_REDIS": "1", "REDIS_ADDR": strconv.Quote(redisAddr)};
//   - DeferpushArgs, if deferpush must be told to take the registration
//     events (flags of deferpush serve);
//   - Missing: "" (and anything the run needs, such as the Kamailio Redis
//     module, goes to scripts/install-test-deps.sh and harness.Require).
//
// The rows then need nothing else: the message rows check every message is
// in the store (Totals.Stored) and delivered, the registration rows that
// deferpush recorded every registration (Settings.Contact).
func redisDirectMode() deferpushMode {
	return deferpushMode{
		System:  systemDeferpushRedis,
		Profile: profileDeferpushRedis,
		Defines: nil,
		Missing: "not built yet",
	}
}
