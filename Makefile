# callq: two commands set everything up on a fresh machine.
#   make run    callq dev: embedded Redis, API and worker in one process
#   make test   go vet and the race-enabled tests against a real redis-server,
#               then a short fuzz of the redactor
#   make fuzz   the redactor's fuzz test, longer (FUZZTIME, default 2m)

GO ?= go
BIN := bin/callq
FUZZTIME ?= 2m

.PHONY: run test cover build bench vet fuzz

run:
	$(GO) run ./cmd/callq dev

build:
	$(GO) build -o $(BIN) ./cmd/callq

vet:
	$(GO) vet ./...

test: vet
	$(GO) test -race -count=1 -timeout 15m ./...
	# A count, not a duration: go1.26's fuzz coordinator can fail a run that
	# ends on its -fuzztime deadline with "context deadline exceeded" and no
	# failing input (golang/go#75804, fixed in go1.27).
	$(GO) test -run '^$$' -fuzz '^FuzzRedactor$$' -fuzztime 40000x ./auth/

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzRedactor$$' -fuzztime $(FUZZTIME) ./auth/

# Unit tests write their counters to .cover/unit; the callq binary that
# cmd/callq's process tests build with -cover writes to .cover/bin.
COVER := $(CURDIR)/.cover

cover:
	rm -rf $(COVER) && mkdir -p $(COVER)/unit $(COVER)/bin
	CALLQ_TEST_COVERDIR=$(COVER)/bin $(GO) test -count=1 -timeout 15m -cover -coverpkg=./... ./... -args -test.gocoverdir=$(COVER)/unit
	@echo "--- the callq processes the tests ran:"
	$(GO) tool covdata percent -i=$(COVER)/bin
	@echo "--- every test, those processes included:"
	$(GO) tool covdata percent -i=$(COVER)/unit,$(COVER)/bin
	$(GO) tool covdata textfmt -i=$(COVER)/unit,$(COVER)/bin -o $(COVER)/profile.txt
	$(GO) tool cover -func=$(COVER)/profile.txt | tail -1

bench:
	$(GO) run ./cmd/callq bench
	$(GO) test -run '^$$' -bench . -benchmem ./...
