#!/usr/bin/env bash
# fuzz.sh runs every Go fuzz target of the module for a bounded time each.
#   scripts/fuzz.sh [duration]   (default 10s)
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
count=0
while IFS=: read -r file _ line; do
	name=$(sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(.*/\1/' <<<"$line")
	pkg=./$(dirname "$file")
	echo "== fuzz $pkg $name ($t)"
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$t" "$pkg"
	count=$((count + 1))
done < <(grep -rn --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]+\(' . | sort)
echo "fuzz.sh: $count fuzz targets ran for $t each"
