# zosfs-agent — build, test, benchmark and demo. See README.md.
GO      ?= go
BIN     := bin/zosfs-agent
# What --version prints beside the commit and the Go version.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
# The shipped binary is static: the SQLite driver is pure Go.
export CGO_ENABLED ?= 0

.PHONY: build test bench demo fuzz vet lint clean

build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION) -X main.commit=$(COMMIT)" -o $(BIN) ./cmd/zosfs-agent

# The whole suite, race detector on (the race detector itself needs cgo).
test:
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 40m ./...

vet:
	$(GO) vet ./...

# go vet plus staticcheck (fetched through the module proxy on first use).
lint: vet
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# Ratios against baselines measured in the same run; results go to docs/BENCHMARKS.md.
# bench-mount.sh needs root and /dev/fuse; bench-site.sh's part B needs root, ip and tc
# (network namespaces, a tbf-shaped uplink); each says so and skips without them.
bench: build
	./scripts/bench-pack.sh
	./scripts/bench-mount.sh
	./scripts/bench-site.sh
	$(GO) test ./p2p -run '^$$' -bench '^BenchmarkSite$$' -benchtime 1x
	SITE_NODES=200 $(GO) test ./p2p -run '^$$' -bench '^BenchmarkSite$$' -benchtime 1x

demo: build
	./scripts/demo.sh

# A short run of every fuzz target (FUZZTIME each).
FUZZTIME ?= 20s
FUZZPKGS ?= ./flist ./p2p ./internal/bloom
fuzz:
	@for p in $(FUZZPKGS); do \
		for t in $$($(GO) test -list 'Fuzz.*' $$p | grep ^Fuzz); do \
			echo "== $$p $$t"; $(GO) test $$p -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 20x || exit 1; \
		done; \
	done

clean:
	rm -rf bin
