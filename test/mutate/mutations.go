package main

// mutation breaks one critical line (or a few) of the product; the tests
// named must notice.
type mutation struct {
	// Name says what the broken code would do.
	Name string
	// File is the path from the repository root.
	File string
	// After, when set, is text the mutation's From must follow: it picks
	// one of several identical lines (the first From after it).
	After string
	// From is the exact text replaced (whitespace included) and To its
	// replacement. From must occur (after After) exactly once, or the list
	// is stale.
	From, To string
	// Tests are the tests that must notice, in the order they run until
	// one fails: a package ("./plugin/msrp/"), or a package, a colon and a
	// go test -run pattern ("./test/:^TestKamailioRelayPush$"). Every run
	// has CI=true: an end-to-end test that misses a server fails instead
	// of skipping.
	Tests []string
}

// mutations is the list `make mutate` works through: the lines whose
// breaking loses a message, lets a stranger in, or stores what is too
// large, each with the tests that must fail.
var mutations = []mutation{
	// A message leaves Redis only after the client's 200.
	{
		Name: "a message the client refused is acked (settle acks every fate)",
		File: "plugin/pushrun.go", After: "func (r *pushRun) settle(",
		From: "\tcase err == nil:\n", To: "\tcase true:\n",
		Tests: []string{"./plugin/"},
	},
	{
		Name: "a refusal (413, 415) counts as delivered (outcome)",
		File: "plugin/push/send.go",
		From: "\t\treturn &plugin.RejectedError{Status: se.Code, Reason: se.Comment}\n", To: "\t\treturn nil\n",
		Tests: []string{"./plugin/push/"},
	},
	{
		Name: "a SEND's failure answer is not waited for (awaitAnswers returns nil)",
		File: "plugin/msrp/session.go", After: "func (s *Session) awaitAnswers(",
		From: "\treturn st.errNow()\n", To: "\treturn nil\n",
		Tests: []string{"./plugin/msrp/"},
	},
	{
		Name:  "a success REPORT for part of a message confirms all of it (reportWait.cover)",
		File:  "plugin/msrp/session.go",
		From:  "\treturn w.size == 0 || len(w.covered) == 1 && w.covered[0].start == 0 && w.covered[0].end == w.size, \"\"\n",
		To:    "\treturn true, \"\"\n",
		Tests: []string{"./plugin/msrp/"},
	},
	// The lease: an ack from a push that lost its lease changes nothing.
	{
		Name: "the ack function does not check the lease",
		File: "store/library.lua", After: "local function ack(keys, token, now, args, from)",
		From: "  if not live(m, token, now) then return {-1, 0} end\n", To: "\n",
		Tests: []string{"./store/"},
	},
	{
		Name: "the finish function ignores another push's lease",
		File: "store/library.lua", After: "function_name = 'dp_finish'",
		From: "  if owner and owner ~= args[1] then return {-2, 0, 0} end\n", To: "\n",
		Tests: []string{"./store/"},
	},
	// Authentication.
	{
		Name: "the hooks take any token",
		File: "api/hooks.go",
		From: "subtle.ConstantTimeCompare(hookToken(c), []byte(s.cfg.HooksToken)) != 1", To: "subtle.ConstantTimeCompare(hookToken(c), hookToken(c)) != 1",
		Tests: []string{"./api/"},
	},
	{
		Name: "the admin API takes any bearer token (as the last one configured)",
		File: "api/admin.go",
		From: "subtle.ConstantTimeCompare(sum[:], a.tokens[i].sum[:]) == 1", To: "subtle.ConstantTimeCompare(sum[:], sum[:]) == 1",
		Tests: []string{"./api/"},
	},
	{
		Name: "the admin API does not check the token's role",
		File: "api/admin.go",
		From: "\t\tif err == nil && !who.may(need) {\n", To: "\t\tif false {\n",
		Tests: []string{"./api/"},
	},
	// Connection bounds (PROBE5 F1).
	{
		Name: "the hooks take connections from outside allow_cidrs (the guard refuses no source)",
		File: "plugin/guard/listener.go",
		From: "\t\tif l.cfg.OnlyTrusted && !trusted {\n", To: "\t\tif false {\n",
		Tests: []string{"./plugin/guard/", "./api/"},
	},
	{
		Name: "a connection trickling a request is never closed for room (slowloris holds the bound)",
		File: "plugin/guard/listener.go",
		From: "\t\t\tif !stale && !fair && !displace {\n", To: "\t\t\tif !stale && !fair && !displace || true {\n",
		Tests: []string{"./plugin/guard/", "./api/:^TestHooksSlowRequestFlood$", "./plugin/msrp/:^TestListenerSlowFlood$"},
	},
	{
		Name: "an untrusted connection may close a trusted one for room",
		File: "plugin/guard/listener.go", After: "func (b *Budget) victim(",
		From:  "\treturn b.victimAmong(c, func(o *conn) bool { return (!o.trusted || !o.used.Load()) && (in == nil || in(o)) })\n",
		To:    "\treturn b.victimAmong(c, in)\n",
		Tests: []string{"./plugin/guard/:^TestTrustedNeverClosedForOthers$"},
	},
	{
		Name: "an MSRP connection that carries a session may be closed for room",
		File: "plugin/msrp/listener.go",
		From: "\tguard.Protect(c.nc)\n", To: "\n",
		Tests: []string{"./plugin/msrp/:^TestListenerKeepsBoundPastGrace$"},
	},
	// Size limits.
	{
		Name: "max_message_size refuses a message of exactly the limit (Redis store)",
		File: "store/queue.go",
		From: "m.Counted() > lim.MaxMessageSize {", To: "m.Counted() >= lim.MaxMessageSize {",
		Tests: []string{"./store/"},
	},
	{
		Name: "max_message_size stores a message over the limit (Redis store)",
		File: "store/queue.go",
		From: "m.Counted() > lim.MaxMessageSize {", To: "m.Counted() > lim.MaxMessageSize+1 {",
		Tests: []string{"./store/"},
	},
	{
		Name: "max_message_size refuses a message of exactly the limit (in-memory store)",
		File: "plugin/plugintest/queue.go",
		From: "m.Counted() > lim.MaxMessageSize {", To: "m.Counted() >= lim.MaxMessageSize {",
		Tests: []string{"./plugin/plugintest/"},
	},
	{
		Name:  "an MSRP message announcing a total over the limit is taken (no 413 at its first chunk)",
		File:  "plugin/msrp/session.go",
		From:  "\tif br.Total > s.cfg.MaxMessageSize || off+n > s.cfg.MaxMessageSize {\n",
		To:    "\tif off+n > s.cfg.MaxMessageSize {\n",
		Tests: []string{"./plugin/msrp/"},
	},
	{
		Name:  "an MSRP message announcing exactly the limit is refused 413",
		File:  "plugin/msrp/session.go",
		From:  "\tif br.Total > s.cfg.MaxMessageSize || off+n > s.cfg.MaxMessageSize {\n",
		To:    "\tif br.Total >= s.cfg.MaxMessageSize || off+n > s.cfg.MaxMessageSize {\n",
		Tests: []string{"./plugin/msrp/"},
	},
	{
		Name:  "MSRP chunks past the limit are taken when no total is announced",
		File:  "plugin/msrp/session.go",
		From:  "\tif br.Total > s.cfg.MaxMessageSize || off+n > s.cfg.MaxMessageSize {\n",
		To:    "\tif br.Total > s.cfg.MaxMessageSize {\n",
		Tests: []string{"./plugin/msrp/"},
	},
	{
		Name: "a message too large is answered 400, not 413, over MSRP",
		File: "plugin/outcome.go",
		From: "HTTP: http.StatusRequestEntityTooLarge, MSRP: 413}", To: "HTTP: http.StatusRequestEntityTooLarge, MSRP: 400}",
		Tests: []string{"./plugin/", "./adapters/ingress/"},
	},
	{
		Name: "a message too large is answered HTTP 400, not 413, by the hooks",
		File: "plugin/outcome.go",
		From: "HTTP: http.StatusRequestEntityTooLarge, MSRP: 413}", To: "HTTP: http.StatusBadRequest, MSRP: 413}",
		Tests: []string{"./plugin/", "./api/"},
	},
	// Success REPORTs.
	{
		Name: "success REPORTs are never asked for",
		File: "plugin/push/send.go",
		From: "\t\treport:    s.policy.SuccessReports || relayed,\n", To: "\t\treport:    false && relayed,\n",
		Tests: []string{"./plugin/push/"},
	},
	{
		Name: "success REPORTs are not asked for through an MSRP relay",
		File: "plugin/push/send.go",
		From: "\t\treport:    s.policy.SuccessReports || relayed,\n", To: "\t\treport:    s.policy.SuccessReports || relayed && false,\n",
		Tests: []string{"./plugin/push/", "./test/:^TestKamailioRelayPush$"},
	},
	{
		Name: "the policy's success_reports is ignored",
		File: "plugin/push/send.go",
		From: "\t\treport:    s.policy.SuccessReports || relayed,\n", To: "\t\treport:    relayed,\n",
		Tests: []string{"./plugin/push/"},
	},
	{
		Name: "the success REPORT asked for is not waited for",
		File: "plugin/msrp/session.go", After: "func (s *Session) await(",
		From: "\tif report == nil {\n", To: "\tif true {\n",
		Tests: []string{"./plugin/msrp/", "./plugin/push/"},
	},
	{
		Name: "a success REPORT that never comes counts as one",
		File: "plugin/msrp/session.go", After: "func (s *Session) await(",
		From: "\t\terr = ErrNoReport\n", To: "\t\terr = nil\n",
		Tests: []string{"./plugin/msrp/", "./plugin/push/"},
	},
}
