package test

import (
	"strconv"
	"strings"
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
		Defines: func(redisAddr string) map[string]string {
			host, port, _ := strings.Cut(redisAddr, ":")
			return map[string]string{
				"REDIS_DIRECT": "1",
				"REDIS_SERVER": strconv.Quote("name=dp;addr=" + host + ";port=" + port),
			}
		},
	}
}
