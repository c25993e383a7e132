#!/usr/bin/env bash
# test.sh runs spareline's whole test suite on a fresh machine with Go:
# installs what the tests need (scripts/deps.sh: redis-server), vets, runs
# every test with the race detector (unit, contract tests on both stores,
# end-to-end through real TCP, a real redis-server and real pseudo-terminals),
# then runs every fuzz target for FUZZ_TIME (default 5s; 0 skips).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
echo "== go vet"
go vet ./...
echo "== go test -race"
go test -race -count=1 -timeout 30m ./...
if [ "${FUZZ_TIME:-5s}" != "0" ]; then
	scripts/fuzz.sh "${FUZZ_TIME:-5s}"
fi
