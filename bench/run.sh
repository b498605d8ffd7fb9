#!/usr/bin/env bash
# The benchmarks, in one command: core throughput and memory, then the Postgres source against
# pg_recvlogical. Starts the services it needs and stops them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin cdc-bridge
scripts/services.sh start postgres
trap 'scripts/services.sh stop postgres' EXIT
eval "$(scripts/services.sh env postgres)"
cargo bench --bench core
cargo bench --bench postgres
