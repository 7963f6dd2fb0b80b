package test

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/deferpush/deferpush/test/harness"
)

// redisDirectMode is the shipped kamailio.cfg's REDIS_DIRECT mode (issue
// 14, items 2 and 3): Kamailio stores an offline MESSAGE with the store's
// Redis function library itself (FCALL dp_store through ndb_redis) and
// reports registrations with dp_register, whose stream event deferpush
// reads (deferpush serve always reads them: no flag). The bench measures
// it in the message rows and the registration rows like the other modes,
// on the run's redis-server.
func redisDirectMode() deferpushMode {
	return deferpushMode{
		System:  systemDeferpushRedis,
		Profile: profileDeferpushRedis,
		Defines: func(server string) map[string]string {
			return map[string]string{"REDIS_DIRECT": "1", "REDIS_SERVER": strconv.Quote(server)}
		},
	}
}

// benchRedis starts the redis-server of a deferpush row or a floor: with
// BENCH_REDIS_UNIX=1 it also listens on a Unix socket (in memory), which
// benchRedisURL and ndbRedisServer then name; the bench's own clients
// keep TCP.
func benchRedis(b *testing.B, p benchParams) *harness.RedisServer {
	b.Helper()
	if !p.RedisUnix {
		return harness.Redis(b)
	}
	return harness.Redis(b, harness.WithUnixSocket(filepath.Join(memTempDir(b), "redis.sock")))
}

// benchRedisURL is deferpush's --redis for r: its socket when it has one.
func benchRedisURL(r *harness.RedisServer) string {
	if r.Socket != "" {
		return "unix://" + r.Socket
	}
	return r.URL()
}

// ndbRedisServer is ndb_redis's server parameter for r, named dp: its
// socket when it has one.
func ndbRedisServer(r *harness.RedisServer) string {
	if r.Socket != "" {
		return "name=dp;unix=" + r.Socket
	}
	host, port, _ := strings.Cut(r.Addr, ":")
	return "name=dp;addr=" + host + ";port=" + port
}
