#!/usr/bin/env bash
# The benchmarks, in one command: core throughput and memory, the Postgres source against
# pg_recvlogical, the MySQL source (MariaDB) against mariadb-binlog and python-mysql-replication,
# the Kafka sink and the Kinesis sink. Starts the services it needs and stops them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin cdc-bridge
scripts/services.sh start postgres mariadb kafka kinesis
trap 'scripts/services.sh stop postgres mariadb kafka kinesis' EXIT
eval "$(scripts/services.sh env postgres mariadb kafka kinesis)"
cargo bench --bench core
cargo bench --bench postgres
cargo bench --bench mysql
cargo bench --bench kafka
cargo bench --bench kinesis
