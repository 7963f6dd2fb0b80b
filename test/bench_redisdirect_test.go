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
	sock := filepath.Join(memTempDir(b), "redis.sock")
	return harness.Redis(b, harness.WithArgs("--unixsocket", sock, "--unixsocketperm", "700"))
}

// redisSocket is the Unix socket benchRedis gave r, or "".
func redisSocket(r *harness.RedisServer) string {
	return r.Arg("--unixsocket")
}

// benchRedisURL is deferpush's --redis for r.
func benchRedisURL(r *harness.RedisServer, p benchParams) string {
	if sock := redisSocket(r); p.RedisUnix && sock != "" {
		return "unix://" + sock
	}
	return r.URL()
}

// ndbRedisServer is ndb_redis's server parameter for r, named dp.
func ndbRedisServer(r *harness.RedisServer, p benchParams) string {
	if sock := redisSocket(r); p.RedisUnix && sock != "" {
		return "name=dp;unix=" + sock
	}
	host, port, _ := strings.Cut(r.Addr, ":")
	return "name=dp;addr=" + host + ";port=" + port
}
