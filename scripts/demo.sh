#!/usr/bin/env bash
# The run-here demo (no Docker): real changes from PostgreSQL replicated to Kinesis and Kafka.
#
# Starts its own throwaway services on 127.0.0.1 with scripts/services.sh (PostgreSQL on 55432,
# the tansu Kafka broker on 29092, the kinesalite Kinesis emulator on 24567; ports apart from the
# tests'), prepares the database with migrations/postgres/, creates the Kinesis stream, runs
# cdc-bridge with connectors/postgres-kinesis.toml and connectors/postgres-kafka.toml, applies a
# short workload (inserts, updates, deletes, a transaction), prints the events as they arrive in
# the stream and the topics, then stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

export CDC_BRIDGE_RUN_DIR=${CDC_BRIDGE_DEMO_DIR:-/tmp/cdc-bridge-demo}
export CDC_BRIDGE_PG_PORT=55432 CDC_BRIDGE_KAFKA_PORT=29092 CDC_BRIDGE_KINESIS_PORT=24567
services=(postgres kafka kinesis)
say() { printf '\n== %s\n' "$*"; }

say "building cdc-bridge and the demo's watcher (release)"
cargo build --release --quiet --bin cdc-bridge --example watch

bridges=()
cleanup() {
  for pid in "${bridges[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${bridges[@]}"; do wait "$pid" 2>/dev/null || true; done
  scripts/services.sh stop "${services[@]}"
}
trap cleanup EXIT

say "starting PostgreSQL, Kafka (tansu) and Kinesis (kinesalite) on 127.0.0.1"
scripts/services.sh start "${services[@]}"
eval "$(scripts/services.sh env "${services[@]}")"
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

say "starting cdc-bridge: postgres -> kinesis and postgres -> kafka"
# The services are new on every run: so are the pipelines' checkpoints.
rm -rf "$CDC_BRIDGE_RUN_DIR/bridge"
for connector in postgres-kinesis postgres-kafka; do
  mkdir -p "$CDC_BRIDGE_RUN_DIR/bridge/$connector"
  (cd "$CDC_BRIDGE_RUN_DIR/bridge/$connector" && exec "$repo/target/release/cdc-bridge" run \
    --config "$repo/connectors/$connector.toml" >bridge.log 2>&1) &
  bridges+=($!)
  echo "   $connector: pid ${bridges[-1]}, log $CDC_BRIDGE_RUN_DIR/bridge/$connector/bridge.log"
done
# Both pipelines stream once their slots are active; changes after that arrive one by one.
for _ in $(seq 1 300); do
  active=$(psql_admin -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ('cdc_bridge_kinesis','cdc_bridge_kafka') AND active")
  [ "$active" = 2 ] && break
  for pid in "${bridges[@]}"; do kill -0 "$pid" 2>/dev/null || { echo "cdc-bridge exited:"; cat "$CDC_BRIDGE_RUN_DIR"/bridge/*/bridge.log; exit 1; }; done
  sleep 0.1
done
[ "$active" = 2 ] || { echo "the pipelines did not start streaming"; cat "$CDC_BRIDGE_RUN_DIR"/bridge/*/bridge.log; exit 1; }

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

say "events arriving in Kafka topics (9 records and a tombstone after each of the 2 deletes)"
target/release/examples/watch kafka "$KAFKA_BROKERS" postgres-kafka.public.customers,postgres-kafka.public.orders 11

say "done: every change arrived in both; stopping cdc-bridge and the services"
