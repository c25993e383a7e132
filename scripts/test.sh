#!/usr/bin/env bash
# test.sh runs spareline's whole test suite on a fresh machine with Go:
# installs what the tests need (scripts/deps.sh: redis-server, chromium,
# chromedriver, g++, kannel, prometheus' promtool), vets, runs
# every test with the race detector (unit, contract tests on both stores,
# end-to-end through real TCP, a real redis-server and real pseudo-terminals),
# then runs every fuzz target for FUZZ_TIME (default 5s; 0 skips).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
echo "== go vet"
go vet ./...
echo "== go test -race"
# The status page test runs in a real Chromium (installed by deps.sh); here
# a missing browser is a failure, not a skip.
export SPARELINE_REQUIRE_BROWSER=1
# Likewise the third-party software of the interop tests (g++ to build an
# SMSC simulator, Kannel) and promtool (the alert rules' unit tests).
export SPARELINE_REQUIRE_THIRDPARTY=1
go test -race -count=1 -timeout 30m ./...
if [ "${FUZZ_TIME:-5s}" != "0" ]; then
	scripts/fuzz.sh "${FUZZ_TIME:-5s}"
fi
