# inbox: `just run`, `just test`, `just bench`, `just replay` (nothing requires just: each recipe is one plain command)

# start inboxd with embedded NATS and development secrets in ./data
run *ARGS:
    go run ./cmd/inboxd {{ARGS}}

# the whole test suite, as CI runs it: installs the tools tests need, then vet, staticcheck and go test -race
test:
    .ci/run

# Go benchmarks (replay rate vs. plain SQLite insert, appends, message p99 under a typing storm), then see `inbox bench --help` for load tests
bench:
    go test -run '^$' -bench . -benchtime 1x -count 3 ./...

# rebuild the read model from the stream (stop inboxd first, or pass --out FILE)
replay *ARGS:
    go run ./cmd/inbox replay {{ARGS}}

# compare the live read model with one rebuilt from the stream
verify *ARGS:
    go run ./cmd/inbox verify {{ARGS}}
