# callq: two commands set everything up on a fresh machine.
#   make run    callq dev: embedded Redis, API and worker in one process
#   make test   go vet and the race-enabled tests against a real redis-server,
#               then a short fuzz of the redactor
#   make fuzz   the redactor's fuzz test, longer (FUZZTIME, default 2m)

GO ?= go
BIN := bin/callq
FUZZTIME ?= 2m

.PHONY: run test build bench vet fuzz

run:
	$(GO) run ./cmd/callq dev

build:
	$(GO) build -o $(BIN) ./cmd/callq

vet:
	$(GO) vet ./...

test: vet
	$(GO) test -race -count=1 -timeout 15m ./...
	$(GO) test -run '^$$' -fuzz '^FuzzRedactor$$' -fuzztime 5s ./auth/

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzRedactor$$' -fuzztime $(FUZZTIME) ./auth/

bench:
	$(GO) run ./cmd/callq bench
	$(GO) test -run '^$$' -bench . -benchmem ./...
