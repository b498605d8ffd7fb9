#!/usr/bin/env bash
# The test command: starts the services the tests need, runs the whole suite, stops them.
#   scripts/test.sh [extra nextest/cargo-test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# The install and failure paths of services.sh, from an empty cache (a minute at most).
scripts/services-selftest.sh

# The trap comes first: a start that fails halfway still stops what it started.
trap 'scripts/services.sh stop' EXIT
scripts/services.sh start
eval "$(scripts/services.sh env)"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
else
  cargo test --no-fail-fast "$@"
fi
