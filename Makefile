# deferpush — see README.md. Every target works on a fresh Debian machine:
# `make test` and `make bench` install the servers they need first.

GO       ?= go
BIN      := bin/deferpush
VERSION  := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
# The whole suite, end-to-end tests included, stays well under 15 minutes.
TESTTIMEOUT ?= 14m

.PHONY: build run test deps lint bench clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/deferpush
	$(GO) build -o bin/imclient ./cmd/imclient

## run: deferpush with the defaults: embedded in-memory store, hooks and
## admin API on loopback, SIP on 127.0.0.1:5070, MSRP on 127.0.0.1:2855.
run: build
	./$(BIN) serve $(ARGS)

## deps: install redis-server, kamailio and sip-tester when missing.
deps:
	@bash scripts/install-test-deps.sh

## test: the whole suite, unit and end-to-end, with real servers.
test: deps
	$(GO) test -count=1 -timeout $(TESTTIMEOUT) ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

## bench: Go benchmarks of the hot paths, benchstat-friendly, in results/.
bench: deps
	@mkdir -p results
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./... | tee results/go-bench.txt

clean:
	rm -rf bin results/tmp
	$(GO) clean -testcache
