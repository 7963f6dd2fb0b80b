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
//	dp:mailboxes       ZSET   aor -> earliest expiry to sweep at (Unix ms)
//	dp:leases          ZSET   aor -> last claim (Unix ms): in-flight work to watch
//	dp:stats           HASH   counters for Totals
//	dp:policy          STRING operator policy JSON
//	dp:changes         pub/sub channel: "policy" after a SetPolicy

const (
	mailboxesKey   = "dp:mailboxes"
	leasesKey      = "dp:leases"
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

// mailbox holds the keys of one recipient in the order the scripts take
// them (KEYS[1..7]).
func mailboxKeys(aor plugin.AOR) []string {
	return []string{pendingKey(aor), inflightKey(aor), deadKey(aor), msgsKey(aor),
		expiryKey(aor), triesKey(aor), lockKey(aor)}
}

// appendKeys holds the keys appendScript takes.
func appendKeys(aor plugin.AOR) []string {
	t := tag(aor)
	return []string{t + "pending", t + "msgs", t + "expiry", t + "gone"}
}
