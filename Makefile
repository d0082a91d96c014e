# callq: two commands set everything up on a fresh machine.
#   make run    callq dev: embedded Redis, API and worker in one process
#   make test   go vet and the race-enabled tests against a real redis-server

GO ?= go
BIN := bin/callq

.PHONY: run test build bench vet

run:
	$(GO) run ./cmd/callq dev

build:
	$(GO) build -o $(BIN) ./cmd/callq

vet:
	$(GO) vet ./...

test: vet
	$(GO) test -race -count=1 -timeout 15m ./...

bench:
	$(GO) run ./cmd/callq bench
	$(GO) test -run '^$$' -bench . -benchmem ./...
