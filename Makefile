# deferpush — see README.md. Every target works on a fresh Debian machine:
# `make test` and `make bench` install the servers they need first.

GO       ?= go
BIN      := bin/deferpush
VERSION  := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
# The whole suite, end-to-end tests included, stays well under 15 minutes.
TESTTIMEOUT ?= 14m

.PHONY: build run demo test soak deps lint bench mutate clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/deferpush
	$(GO) build -o bin/imclient ./cmd/imclient

## run: deferpush with the defaults: embedded in-memory store, hooks and
## admin API on loopback, SIP on 127.0.0.1:5070, MSRP on 127.0.0.1:2855.
run: build
	./$(BIN) serve $(ARGS)

## demo: the seed's flow with real servers on loopback: redis-server,
## Kamailio running the shipped kamailio.cfg and deferpush; three messages
## to an offline user (a SIP MESSAGE, an MSRP session of two), then the
## reference client registers and prints what deferpush pushes. The
## console's URL and an admin token are printed; STAY=1 keeps the servers
## up until Ctrl-C to look around in it.
demo: build deps
	$(GO) build -o bin/demo ./test/demo
	./bin/demo $(if $(STAY),--stay)

## deps: install redis-server, kamailio, sip-tester and m4 when missing,
## and build OpenSIPS 3.4 once per machine from ../shared/opensips (cached
## in /var/cache/deferpush-opensips) when no opensips 3.4 is installed.
deps:
	@bash scripts/install-test-deps.sh

## test: the whole suite, unit and end-to-end, with real servers.
test: deps
	$(GO) test -count=1 -timeout $(TESTTIMEOUT) ./...

## soak: the fault suite (kill -9 of deferpush and redis-server, broken
## clients, two instances) repeated ROUNDS times per fault (20), and the
## full-size load run (10,000 users, 100,000 messages); the reliability
## table goes to results/tmp/reliability.md. `make test` runs one round of
## each fault (TestFault*) and a 500-user load run (TestLoad).
ROUNDS ?= 20
soak: deps
	@mkdir -p results/tmp
	DEFERPUSH_SOAK_ROUNDS=$(ROUNDS) DEFERPUSH_FAULT_REPORT=$(CURDIR)/results/tmp/reliability.md \
		$(GO) test -count=1 -timeout 30m -run '^TestSoak' -v ./test/
	@cat results/tmp/reliability.md

## mutate: break each critical line listed in test/mutate/mutations.go
## (the ack only after a 200, the ack function's lease check, the token
## comparisons, the size limits and their 413s, success REPORTs) one at a
## time, on a copy of the tree, and run the tests that must notice; prints
## the table and fails when a mutation survives. Not part of make test or
## CI (about 10 minutes).
mutate: deps
	$(GO) run ./test/mutate $(ARGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

## bench: deferpush beside Kamailio's and OpenSIPS's msilo and beside the
## machine's limits (real Kamailio, OpenSIPS, redis-server, SIPp), with
## the servers on one set of CPUs and the clients on another (taskset):
## report.md, report.csv, report-register.csv and delivery.svg in
## results/<date>-<host>/; then the Go benchmarks of the hot paths in
## results/go-bench.txt (benchstat input). U=users (200), M=messages per
## user (1,10,50), REG_N=REGISTERs of the registration rows (10000) and
## RUNS=runs of each row (3) change the workload. QUICK=1 is the small
## variant CI runs (one run of each row, about a minute); it writes to
## results/tmp/ instead.
BENCHOUT   = $(if $(QUICK),results/tmp/go-bench-quick.txt,results/go-bench.txt)
BENCHFLAGS = $(if $(QUICK),-count 1 -benchtime 100ms,-count 5)
bench: deps
	@mkdir -p results/tmp
	QUICK=$(QUICK) U=$(U) M=$(M) REG_N=$(REG_N) RUNS=$(RUNS) $(GO) test -count=1 -run '^$$' -bench '^BenchmarkVsMsilo$$' -benchtime 1x -timeout 25m -v ./test/
	$(GO) test -run '^$$' -bench . -benchmem $(BENCHFLAGS) ./plugin/... ./store/... ./adapters/... > $(BENCHOUT) || { cat $(BENCHOUT); exit 1; }
	@cat $(BENCHOUT)

clean:
	rm -rf bin results/tmp
	$(GO) clean -testcache
