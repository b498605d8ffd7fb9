#!/usr/bin/env bash
# The run-here demo (no Docker): real changes from PostgreSQL replicated to Kinesis and Kafka.
#
# Starts its own throwaway services on 127.0.0.1 with scripts/services.sh (PostgreSQL on 55432,
# the tansu Kafka broker on 29092, the kinesalite Kinesis emulator on 24567; ports apart from the
# tests'), prepares the database with migrations/postgres/, creates the Kinesis stream, and runs
# cdc-bridge with connectors/postgres-kinesis.toml, then connectors/postgres-kafka.toml. Each half
# applies a short workload (inserts, updates, deletes, a transaction) and prints the events as
# they arrive. On the first run the Kafka broker is built from source (10-30 minutes, once): the
# build runs in the background while the Kinesis half runs, with progress lines after it.
# Every exit, success or failure, stops everything the demo started.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

export CDC_BRIDGE_RUN_DIR=${CDC_BRIDGE_DEMO_DIR:-/tmp/cdc-bridge-demo}
export CDC_BRIDGE_PG_PORT=55432 CDC_BRIDGE_KAFKA_PORT=29092 CDC_BRIDGE_KINESIS_PORT=24567
CACHE=${CDC_BRIDGE_CACHE:-$HOME/.cache/cdc-bridge}
say() { printf '\n== %s\n' "$*"; }

# The trap comes before anything starts: whatever fails, what was started stops.
bridges=()
broker_build=
cleanup() {
  for pid in "${bridges[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${bridges[@]}"; do wait "$pid" 2>/dev/null || true; done
  # The build keeps its progress in the cache: the next run goes on from there.
  [ -n "$broker_build" ] && kill -TERM -- "-$broker_build" 2>/dev/null || true
  scripts/services.sh stop postgres kafka kinesis
}
trap cleanup EXIT

if [ ! -x "$CACHE/tansu/bin/tansu" ]; then
  say "first run: building the Kafka broker (tansu) in the background, 10-30 minutes once;"
  echo "   the Kinesis half of the demo runs meanwhile (build log: $CACHE/tansu-build.log)"
  mkdir -p "$CACHE"
  setsid scripts/services.sh tansu-install >"$CACHE/tansu-install.out" 2>&1 </dev/null &
  broker_build=$!
fi

say "building cdc-bridge and the demo's watcher (release; a few minutes the first time)"
cargo build --release --bin cdc-bridge --example watch

say "starting PostgreSQL and Kinesis (kinesalite) on 127.0.0.1"
scripts/services.sh start postgres kinesis
eval "$(scripts/services.sh env postgres kinesis)"
psql_admin() { psql "$CDC_BRIDGE_PG_ADMIN_URL" -v ON_ERROR_STOP=1 -qAt "$@"; }

say "preparing the database with migrations/postgres/"
for f in migrations/postgres/*.sql; do echo "   $f"; psql_admin -f "$f" >/dev/null; done

export PG_URL=postgres://cdc_bridge:change-me@127.0.0.1:$CDC_BRIDGE_PG_PORT/app
export KAFKA_BROKERS=127.0.0.1:$CDC_BRIDGE_KAFKA_PORT
export KINESIS_ENDPOINT=$CDC_BRIDGE_KINESIS_ENDPOINT KINESIS_STREAM=cdc-bridge-demo

say "creating Kinesis stream $KINESIS_STREAM (2 shards)"
kinesis_call() { # ACTION JSON
  curl -sf -X POST "$KINESIS_ENDPOINT/" -H 'Content-Type: application/x-amz-json-1.1' \
    -H "X-Amz-Target: Kinesis_20131202.$1" -H "X-Amz-Date: $(date -u +%Y%m%dT%H%M%SZ)" \
    -H 'Authorization: AWS4-HMAC-SHA256 Credential=demo/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=0' \
    -d "$2"
}
kinesis_call CreateStream "{\"StreamName\":\"$KINESIS_STREAM\",\"ShardCount\":2}" >/dev/null
for _ in $(seq 1 50); do
  kinesis_call DescribeStreamSummary "{\"StreamName\":\"$KINESIS_STREAM\"}" | grep -q '"ACTIVE"' && break
  sleep 0.1
done

# The services are new on every run: so are the pipelines' checkpoints.
rm -rf "$CDC_BRIDGE_RUN_DIR/bridge"
# start_bridge CONNECTOR SLOT PORT: runs cdc-bridge with connectors/CONNECTOR.toml, serving its
# metrics and status on 127.0.0.1:PORT, until its slot streams.
start_bridge() {
  local connector=$1 slot=$2 dir=$CDC_BRIDGE_RUN_DIR/bridge/$1
  mkdir -p "$dir"
  (cd "$dir" && CDC_BRIDGE_HTTP_LISTEN=127.0.0.1:$3 exec "$repo/target/release/cdc-bridge" run --config "$repo/connectors/$connector.toml" >bridge.log 2>&1) &
  bridges+=($!)
  echo "   $connector: pid ${bridges[-1]}, log $dir/bridge.log"
  for _ in $(seq 1 300); do
    [ "$(psql_admin -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot' AND active")" = 1 ] && return 0
    kill -0 "${bridges[-1]}" 2>/dev/null || { echo "cdc-bridge exited:"; cat "$dir/bridge.log"; return 1; }
    sleep 0.1
  done
  echo "the pipeline did not start streaming:"; cat "$dir/bridge.log"; return 1
}

say "starting cdc-bridge: postgres -> kinesis"
start_bridge postgres-kinesis cdc_bridge_kinesis 29187

say "applying a workload: 9 changes (inserts, updates, deletes, one multi-statement transaction)"
psql_admin <<'SQL'
INSERT INTO customers (id, email, name) VALUES (1, 'ada@example.org', 'Ada'), (2, 'linus@example.org', 'Linus');
INSERT INTO orders (id, customer_id, amount, tags, details)
  VALUES (100, 1, 19.99, '{book,gift}', '{"wrap": true}'), (101, 2, 5.00, NULL, NULL);
UPDATE orders SET status = 'paid', amount = 21.50 WHERE id = 100;
BEGIN;
  UPDATE customers SET name = 'Ada Lovelace' WHERE id = 1;
  INSERT INTO orders (id, customer_id, amount) VALUES (102, 1, 3.50);
  DELETE FROM orders WHERE id = 101;
COMMIT;
DELETE FROM customers WHERE id = 2;
SQL
cat <<'TXT'
   INSERT customers 1, 2; INSERT orders 100, 101; UPDATE orders 100;
   BEGIN; UPDATE customers 1; INSERT orders 102; DELETE orders 101; COMMIT; DELETE customers 2
TXT

say "events arriving in Kinesis stream $KINESIS_STREAM (9 records, one per change)"
target/release/examples/watch kinesis "$KINESIS_ENDPOINT" "$KINESIS_STREAM" 9

if [ -n "$broker_build" ]; then
  say "waiting for the Kafka broker's first build (progress every 20 s)"
  started=$(date +%s) first=
  while kill -0 "$broker_build" 2>/dev/null; do
    progress=$(scripts/services.sh tansu-progress) # "compiled N of about M crates"
    done_now=$(echo "$progress" | awk '{print $2}') total=$(echo "$progress" | awk '{print $5}')
    first=${first:-$done_now}
    elapsed=$(($(date +%s) - started))
    if [ "$elapsed" -ge 20 ] && [ "$done_now" -gt "$first" ] && [ "$total" -gt "$done_now" ]; then
      eta=$(((total - done_now) * elapsed / (done_now - first) / 60 + 1))
      echo "   tansu: $progress, about $eta min left"
    else
      echo "   tansu: $progress"
    fi
    for _ in $(seq 1 20); do kill -0 "$broker_build" 2>/dev/null || break; sleep 1; done
  done
  wait "$broker_build" || { echo "the broker build failed:"; cat "$CACHE/tansu-install.out"; tail -20 "$CACHE/tansu-build.log"; exit 1; }
  broker_build=
  echo "   tansu is built and cached; later runs start it at once"
fi

say "starting Kafka (tansu) on 127.0.0.1"
scripts/services.sh start kafka

say "starting cdc-bridge: postgres -> kafka (it first copies the 3 rows the tables hold now)"
start_bridge postgres-kafka cdc_bridge_kafka 29188

say "applying a second workload: 9 changes"
psql_admin <<'SQL'
INSERT INTO customers (id, email, name) VALUES (3, 'grace@example.org', 'Grace'), (4, 'ken@example.org', 'Ken');
INSERT INTO orders (id, customer_id, amount, tags) VALUES (200, 3, 42.00, '{lamp}'), (201, 4, 7.25, NULL);
UPDATE orders SET status = 'paid' WHERE id = 200;
BEGIN;
  UPDATE customers SET name = 'Grace Hopper' WHERE id = 3;
  INSERT INTO orders (id, customer_id, amount) VALUES (202, 3, 1.00);
  DELETE FROM orders WHERE id = 201;
COMMIT;
DELETE FROM customers WHERE id = 4;
SQL

say "events arriving in Kafka topics (3 snapshot rows, 9 changes and a tombstone after each of the 2 deletes)"
target/release/examples/watch kafka "$KAFKA_BROKERS" postgres-kafka.public.customers,postgres-kafka.public.orders 14

say "the pipelines as \`cdc-bridge status\` shows them (their metrics: http://127.0.0.1:29187/metrics, :29188/metrics)"
CDC_BRIDGE_HTTP_LISTEN=127.0.0.1:29187 target/release/cdc-bridge status --config connectors/postgres-kinesis.toml
CDC_BRIDGE_HTTP_LISTEN=127.0.0.1:29188 target/release/cdc-bridge status --config connectors/postgres-kafka.toml

say "done: every change arrived in both; stopping cdc-bridge and the services"
