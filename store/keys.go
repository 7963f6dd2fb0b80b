package store

import "github.com/deferpush/deferpush/plugin"

// Every Redis key and channel name comes from this file.
//
// A recipient's keys carry the hash tag {aor}, so in Redis Cluster they
// share one slot and one function of the library (library.lua) may touch
// them all. A canonical AOR never contains '{' or '}' (plugin.ParseAOR
// rejects them), so the tag is the whole AOR. Global keys are touched
// only by single-key commands and dp_index_cas, but for the proxy's own
// functions (dp_store, dp_register, dp_unregister), which are
// registered no-cluster.
//
//	dp:{aor}:q     LIST   ids pending or in flight, in delivery order; the
//	                      first n of them are in flight
//	dp:{aor}:m     HASH   <id>    -> record (record.go, immutable)
//	                      t:<id>  -> "<attempts> <last error>" (after a Fail)
//	                      lock    -> "<token> <until ms>" (the lease)
//	                      n       -> ids in flight at the head of q
//	dp:{aor}:d     LIST   dead-lettered ids, in order (only when some)
//	dp:{aor}:f     ZSET   id -> expiry (ms) of the messages whose sender
//	                      waits for a failure notice (only when some;
//	                      notices.go)
//	dp:{aor}:g     STRING "gone": set (PX 1 h) by the sweeper when it found
//	                      the mailbox empty and unindexed it (sweep.go);
//	                      an append that deletes it indexes the mailbox again
//	dp:{aor}:s     STRING user settings JSON
//	dp:{aor}:c     STRING last registration JSON (PX: its expiry + 1 h),
//	                      with pager_only once a push learnt it
//	dp:{aor}:a     STRING "<at µs> <r|u> <contact>": the last registration
//	                      (r) or unregistration (u) a proxy recorded with
//	                      dp_register / dp_unregister, or a hook with its
//	                      "at" (SetContact / DeleteContact), for their
//	                      ordering rule (PX: the registration's; an hour
//	                      for u)
//	dp:mailboxes   ZSET   aor -> when to sweep it (earliest expiry, ms)
//	dp:recent      ZSET   aor -> when a message was last stored for it
//	                      (ms), beside the index (Append, dp_store, a
//	                      requeue of dead letters, a migration): a proxy
//	                      that caches who may have messages polls it
//	                      (library.lua's dp_recent, which drops what is
//	                      older than a minute); written only while
//	dp:recent:on   STRING exists (set by each poll, for 10 minutes)
//	dp:leases      ZSET   aor -> last claim (ms): in-flight work to watch
//	dp:stats       HASH   counters for Totals
//	dp:policy      STRING operator policy JSON (+ who, when)
//	dp:limits      HASH   the part of the policy a proxy that calls the
//	                      library itself applies (store_enabled 0/1,
//	                      max_message_size, max_mailbox, ttl_ms,
//	                      full_mailbox_reply, store_disabled_reply,
//	                      push_enabled 0/1, default_push, delivery,
//	                      pager_below), written with
//	                      every policy change, and case_sensitive_user 0/1
//	                      (configuration: written at start)
//	dp:seq         STRING the counter in the ids dp_store makes
//	dp:events      STREAM registration events dp_register / dp_unregister
//	                      (and dp_store's "stored") append (kind, aor,
//	                      contact, expires ms, at µs),
//	                      MAXLEN ~ 100000, read by the consumer group
//	                      "deferpush" (events.go)
//	dp:layout      STRING "2" once the keys of the first layout were
//	                      converted (migrate.go)
//	dp:changes     pub/sub channel: "policy" after a policy change
//
// The first layout, which migrate.go converts: dp:{aor}:pending, inflight,
// dead (LISTs), msgs (HASH id -> record), expiry (ZSET id -> ms), tries
// (HASH id -> attempts), lock (HASH owner, until), gone, settings,
// contact and notify (ZSET id -> ms), and the global dp:notices (ZSET aor
// -> ms), which this layout does without (the mailbox index finds the
// expired messages).

const (
	mailboxesKey   = "dp:mailboxes"
	recentKey      = "dp:recent"
	recentOnKey    = "dp:recent:on"
	leasesKey      = "dp:leases"
	statsKey       = "dp:stats"
	policyKey      = "dp:policy"
	limitsKey      = "dp:limits"
	layoutKey      = "dp:layout"
	changesChannel = "dp:changes"
	// cancelChannel carries "<aor>\n<contact>" for each unregistration
	// (library.lua's forget): every instance ends its push to it.
	cancelChannel = "dp:cancel"
	// layoutPattern finds the keys of recipients (SCAN MATCH).
	layoutPattern = "dp:{*}:*"
	// firstNoticesKey is the first layout's index of notify sets.
	firstNoticesKey = "dp:notices"
)

// tagOf is the prefix of every key of the recipient written aor.
func tagOf(aor string) string { return "dp:{" + aor + "}:" }

func tag(aor plugin.AOR) string { return tagOf(aor.String()) }

func settingsKey(aor plugin.AOR) string { return tag(aor) + "s" }
func contactKey(aor plugin.AOR) string  { return tag(aor) + "c" }
func orderKey(aor plugin.AOR) string    { return tag(aor) + "a" }

// mailboxKeys are the keys of a recipient's mailbox, which every mailbox
// function takes, in the order of library.lua's header: q, m, d, g, f.
func mailboxKeys(aor plugin.AOR) []string {
	t := tag(aor)
	// Room for dp:mailboxes and dp:stats, which dp_append takes after
	// them on one Redis (appendIndexed), without another allocation.
	keys := make([]string, 5, 7)
	keys[0], keys[1], keys[2], keys[3], keys[4] = t+"q", t+"m", t+"d", t+"g", t+"f"
	return keys
}

// firstLayout are the key suffixes of the first layout, in the order
// dp_migrate1 takes them.
var firstLayout = []string{"pending", "inflight", "dead", "msgs", "expiry", "tries", "lock", "gone", "settings", "contact", "notify"}

// secondLayout are the key suffixes of this layout, in the order
// dp_migrate1 takes them after the first layout's.
var secondLayout = []string{"q", "m", "d", "g", "s", "c", "f"}

// migrateKeys are the keys dp_migrate1 takes for the recipient written
// aor (as found in a key: migration does not parse it, so that a stored
// AOR is converted as written): the first layout's, then this one's.
func migrateKeys(aor string) []string {
	t := tagOf(aor)
	keys := make([]string, 0, len(firstLayout)+len(secondLayout))
	for _, s := range firstLayout {
		keys = append(keys, t+s)
	}
	for _, s := range secondLayout {
		keys = append(keys, t+s)
	}
	return keys
}
