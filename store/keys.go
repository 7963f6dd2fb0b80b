package store

import "github.com/deferpush/deferpush/plugin"

// Every Redis key and channel name comes from this file.
//
// A recipient's keys carry the hash tag {aor}, so in Redis Cluster they
// share one slot and one Lua script may touch them all. A canonical AOR
// never contains '{' or '}' (plugin.ParseAOR rejects them), so the tag is
// the whole AOR. Global keys are touched only by single-key commands.
//
//	dp:{aor}:pending   LIST   message ids waiting, oldest at the head
//	dp:{aor}:inflight  LIST   ids claimed by the current push, in claim order
//	dp:{aor}:dead      LIST   dead-lettered ids, in order
//	dp:{aor}:msgs      HASH   id -> record (record.go, immutable)
//	dp:{aor}:expiry    ZSET   id -> expiry (Unix ms)
//	dp:{aor}:tries     HASH   id -> "<attempts> <last error>"
//	dp:{aor}:lock      HASH   owner -> token, until -> lease end (Unix ms)
//	dp:{aor}:gone      STRING set by the sweeper when it found the mailbox
//	                          empty and unindexes it (see sweep.go)
//	dp:{aor}:settings  STRING user settings JSON
//	dp:{aor}:contact   STRING last registration JSON
//	dp:{aor}:notify    ZSET   id -> expiry (Unix ms) of the messages whose
//	                          sender asked to hear of a failure (notices.go)
//	dp:mailboxes       ZSET   aor -> earliest expiry to sweep at (Unix ms)
//	dp:leases          ZSET   aor -> last claim (Unix ms): in-flight work to watch
//	dp:notices         ZSET   aor -> earliest dp:{aor}:notify expiry to look at
//	dp:stats           HASH   counters for Totals
//	dp:policy          STRING operator policy JSON
//	dp:changes         pub/sub channel: "policy" after a SetPolicy

const (
	mailboxesKey   = "dp:mailboxes"
	leasesKey      = "dp:leases"
	noticesKey     = "dp:notices"
	statsKey       = "dp:stats"
	policyKey      = "dp:policy"
	changesChannel = "dp:changes"
)

func tag(aor plugin.AOR) string { return "dp:{" + aor.String() + "}:" }

func pendingKey(aor plugin.AOR) string  { return tag(aor) + "pending" }
func inflightKey(aor plugin.AOR) string { return tag(aor) + "inflight" }
func deadKey(aor plugin.AOR) string     { return tag(aor) + "dead" }
func msgsKey(aor plugin.AOR) string     { return tag(aor) + "msgs" }
func expiryKey(aor plugin.AOR) string   { return tag(aor) + "expiry" }
func triesKey(aor plugin.AOR) string    { return tag(aor) + "tries" }
func lockKey(aor plugin.AOR) string     { return tag(aor) + "lock" }
func goneKey(aor plugin.AOR) string     { return tag(aor) + "gone" }
func settingsKey(aor plugin.AOR) string { return tag(aor) + "settings" }
func contactKey(aor plugin.AOR) string  { return tag(aor) + "contact" }
func notifyKey(aor plugin.AOR) string   { return tag(aor) + "notify" }

// mailbox holds the keys of one recipient in the order the scripts take
// them (KEYS[1..7]).
func mailboxKeys(aor plugin.AOR) []string {
	return []string{pendingKey(aor), inflightKey(aor), deadKey(aor), msgsKey(aor),
		expiryKey(aor), triesKey(aor), lockKey(aor)}
}

// appendKeys holds the keys appendScript takes.
func appendKeys(aor plugin.AOR) []string {
	t := tag(aor)
	return []string{t + "pending", t + "msgs", t + "expiry", t + "gone", t + "notify"}
}

// withNotify is the mailbox's keys and its notify set (KEYS[8]), for the
// scripts that keep the notify set: claim and fail.
func withNotify(aor plugin.AOR) []string { return append(mailboxKeys(aor), notifyKey(aor)) }
