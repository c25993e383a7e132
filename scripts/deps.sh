#!/usr/bin/env bash
# deps.sh installs the system packages spareline's tests need, if missing.
# Idempotent: a package whose binary is already on PATH is left alone.
# Runs as root without sudo; as another user it uses sudo when present.
#
#   binary        Debian package   needed by
#   redis-server  redis-server     store/ and end-to-end tests (test/redisserver)
#   chromium      chromium         status page test in a real browser (test/e2e)
#   chromedriver  chromium-driver  drives that browser (W3C WebDriver)
#   g++           g++              builds a third-party SMSC simulator from source (test/e2e)
#   bearerbox     kannel           Kannel as a third-party platform (test/e2e); in /usr/sbin
#   promtool      prometheus       unit tests of deploy/alerts.yml (deploy/)
#
# Packages that would start a daemon when installed (redis-server, kannel,
# prometheus)
# are kept from doing so (policy-rc.d): the tests start their own, on
# loopback ports of their choosing.
set -euo pipefail

# binary:package pairs.
deps=(
	"redis-server:redis-server"
	"chromium:chromium"
	"chromedriver:chromium-driver"
	"g++:g++"
	"bearerbox:kannel"
	"promtool:prometheus"
)

# has reports whether a binary is installed (on PATH, or in /usr/sbin,
# which a user's PATH may lack).
has() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

missing=()
for pair in "${deps[@]}"; do
	bin=${pair%%:*}
	pkg=${pair#*:}
	if ! has "$bin"; then
		missing+=("$pkg")
	fi
done

if [ ${#missing[@]} -eq 0 ]; then
	echo "deps.sh: all present"
	exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO=(sudo)
	else
		echo "deps.sh: not root and no sudo; install as root: ${missing[*]}" >&2
		exit 1
	fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "deps.sh: installing ${missing[*]}"
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
	"${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
	trap '"${SUDO[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
fi
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

for pair in "${deps[@]}"; do
	bin=${pair%%:*}
	if ! has "$bin"; then
		echo "deps.sh: $bin still not installed" >&2
		exit 1
	fi
done
echo "deps.sh: done"
