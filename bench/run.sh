#!/usr/bin/env bash
# The benchmarks, in one command, ending with one table of every figure beside its reference
# measured in the same run: core throughput and memory, the Postgres source against
# pg_recvlogical, the MySQL source (MariaDB) against mariadb-binlog and python-mysql-replication,
# the DynamoDB Streams source against a plain boto3 reader, the Kafka sink against a plain
# librdkafka producer, the Kinesis sink against a plain PutRecords client,
# commit-to-readable latency, the checkpoint stores against their servers' plain writes, and the
# Postgres snapshot (first copy and copy while streaming) against COPY, and the MariaDB
# snapshot against the mariadb client's SELECT.
# Starts the services it needs and stops them on every exit.
#   bench/run.sh [BENCH...]   (default: core postgres mysql dynamodb kafka kinesis latency stores snapshot snapshot_mysql)
set -euo pipefail
cd "$(dirname "$0")/.."
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(core postgres mysql dynamodb kafka kinesis latency stores snapshot snapshot_mysql)
services=(postgres mariadb dynamodb kafka kinesis)

trap 'scripts/services.sh stop "${services[@]}"' EXIT
cargo build --release --bin cdc-bridge
scripts/services.sh start "${services[@]}"
eval "$(scripts/services.sh env "${services[@]}")"

log=$(mktemp)
for bench in "${benches[@]}"; do
  if [ "$bench" = kafka ] || [ "$bench" = latency ]; then
    # A fresh broker for each: tansu's SQLite storage has panicked under long runs ("more or
    # less than one row"), which would fail every benchmark after it.
    scripts/services.sh stop kafka >/dev/null
    scripts/services.sh start kafka
  fi
  cargo bench --bench "$bench" | tee -a "$log"
done

echo
echo "| figure | cdc-bridge | reference (same run) | ratio |"
echo "| --- | --- | --- | --- |"
grep '^REPORT|' "$log" | awk -F'|' '{printf "| %s | %s | %s | %s |\n", $2, $3, $4, $5}'
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $(date -u +%Y-%m-%d)"
rm -f "$log"
