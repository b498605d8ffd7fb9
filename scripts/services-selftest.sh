#!/usr/bin/env bash
# Checks scripts/services.sh as a new machine sees it: from an empty cache folder it installs
# the npm emulators, starts and stops them; a start that fails halfway (a broker that cannot be
# built, a port another process holds) exits non-zero, says where its log is, and leaves no
# process behind. Runs on private ports and folders of its own, in one to two minutes.
#   scripts/services-selftest.sh
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
chmod 755 "$work" # the throwaway PostgreSQL runs as user postgres and must reach its folder
export CDC_BRIDGE_CACHE=$work/cache/new CDC_BRIDGE_RUN_DIR=$work/run
export CDC_BRIDGE_PG_PORT=46329 CDC_BRIDGE_KAFKA_PORT=46392 CDC_BRIDGE_KINESIS_PORT=46567 CDC_BRIDGE_DYNAMODB_PORT=46800
failures=0
blocker=
say() { echo "services-selftest: $*" >&2; }
fail() { say "FAILED: $*"; failures=$((failures + 1)); }

# Processes started from this self-test's folders (by command line or working directory).
leftovers() {
  local pid
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$pid" = $$ ] || [ "$pid" = "$BASHPID" ] || [ "$pid" = "${blocker:-x}" ] && continue
    if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$work" \
      || readlink "/proc/$pid/cwd" 2>/dev/null | grep -qF "$work"; then
      echo "$pid $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")"
    fi
  done
}
expect_no_leftovers() { # what
  local left; left=$(leftovers)
  [ -z "$left" ] || fail "$1 left processes running: $left"
}
cleanup() {
  [ -n "$blocker" ] && kill "$blocker" 2>/dev/null
  scripts/services.sh stop postgres kafka kinesis dynamodb >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

say "1. the npm emulators install into an empty cache ($CDC_BRIDGE_CACHE), start and stop"
if scripts/services.sh start kinesis dynamodb; then
  for f in "$CDC_BRIDGE_RUN_DIR/kinesis/kinesalite.pid" "$CDC_BRIDGE_RUN_DIR/dynamodb/dynamodb.pid"; do
    kill -0 "$(cat "$f")" 2>/dev/null || fail "the process recorded in $f is not running"
  done
  scripts/services.sh stop kinesis dynamodb
  expect_no_leftovers "stop"
else
  fail "start kinesis dynamodb from an empty cache"
fi

say "2. a broker that cannot be built: the start fails, names its log, stops PostgreSQL again"
rm -rf "$CDC_BRIDGE_CACHE/tansu" # never the real cache: this one is the self-test's own
if CDC_BRIDGE_TANSU_VERSION=0.0.0-does-not-exist scripts/services.sh start postgres kafka 2>"$work/start.err"; then
  fail "start with an unbuildable broker succeeded"
else
  grep -q "tansu build failed, see $CDC_BRIDGE_CACHE/tansu-build.log" "$work/start.err" \
    || fail "the failure does not name the build log: $(cat "$work/start.err")"
  [ -s "$CDC_BRIDGE_CACHE/tansu-build.log" ] || fail "the build log $CDC_BRIDGE_CACHE/tansu-build.log is missing"
fi
expect_no_leftovers "a failed start"

say "3. a port another process holds: the start fails and stops what it started"
python3 -c 'import socket,sys,time; s=socket.socket(); s.bind(("127.0.0.1",int(sys.argv[1]))); s.listen(); time.sleep(600)' \
  "$CDC_BRIDGE_DYNAMODB_PORT" &
blocker=$!
for _ in $(seq 1 50); do (echo >"/dev/tcp/127.0.0.1/$CDC_BRIDGE_DYNAMODB_PORT") 2>/dev/null && break; sleep 0.1; done
if scripts/services.sh start kinesis dynamodb 2>"$work/start.err"; then
  fail "start on a taken port succeeded"
else
  grep -q "port $CDC_BRIDGE_DYNAMODB_PORT is taken" "$work/start.err" || fail "the failure does not name the port: $(cat "$work/start.err")"
fi
expect_no_leftovers "a start on a taken port"

if [ "$failures" -gt 0 ]; then say "$failures check(s) failed"; exit 1; fi
say "all checks passed"
