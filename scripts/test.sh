#!/usr/bin/env bash
# Runs every tickrelay test on a fresh machine: installs what the tests need
# when it is missing (Debian's chromium, prometheus, haproxy, nats-server and
# openssl, the browser test's npm packages), then builds and runs the whole
# suite against the real binaries.
#
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh --test it polling::   # extra args go to cargo test
#
# The integration tests are one binary, tests/it (a module per area).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian puts haproxy and nats-server in /usr/sbin.
export PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
# tests/it/edge.rs makes its TLS certificate with the openssl CLI.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  # Packages must not start system services (prometheus would take :9090,
  # haproxy its configured ports, nats-server :4222).
  policy=/usr/sbin/policy-rc.d
  added_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod +x "$policy"
    added_policy=1
  fi
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ "$added_policy" = 1 ] && as_root rm -f "$policy"
fi

if [ -f tests/browser/package.json ] && [ ! -d tests/browser/node_modules ]; then
  echo "test.sh: installing the browser test's npm packages"
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

# Let the relay have the UDP receive buffer it asks for (8 MiB), so bursts in
# the tests are not dropped by a small kernel default. Root only; harmless.
if [ "$(id -u)" = 0 ]; then
  sysctl -qw net.core.rmem_max=16777216 2>/dev/null || true
fi

# One feature resolution for everything: a build that has test targets in it
# turns on the features the dev-dependencies ask for, one without them does
# not, and every crate above a crate whose features differ is built twice
# (the relay library among them, minutes on two cores). So the binaries the
# tests run (feed-simulator too, which tests/it/support builds the same way)
# are built together with the tests.
built_at=$SECONDS
cargo build --release --workspace --bins --tests
echo "test.sh: built in $((SECONDS - built_at)) s"

# A test that hangs must fail the run, not hold it: the whole run is bounded
# (it takes about a third of this on two cores). The harness names a test
# running over 60 s in its output.
bounded() {
  local rc=0
  timeout -k 30 "${TICKRELAY_TEST_BOUND:-1800}" "$@" || rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "test.sh: '$*' did not end within ${TICKRELAY_TEST_BOUND:-1800} s" >&2
  fi
  return "$rc"
}
if [ $# -gt 0 ]; then
  bounded cargo test --release --workspace --no-fail-fast "$@"
else
  # `--tests`: every unit and integration test, without building the
  # nchan-bridge example (a benchmark helper that clippy checks); then the
  # doc tests, which `--tests` leaves out.
  tested_at=$SECONDS
  bounded cargo test --release --workspace --no-fail-fast --tests
  cargo test --release --workspace --doc
  echo "test.sh: every test ran in $((SECONDS - tested_at)) s"
fi
