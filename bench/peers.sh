#!/usr/bin/env bash
# Installs the PostgreSQL peers the snapshot and drain benchmarks compare with when missing:
# pgcopydb and the wal2json output plugin its `follow` needs (Debian packages). Safe to run
# any number of times. Sourced by bench/snapshot and bench/drain.
set -euo pipefail
pg_major=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! command -v pgcopydb >/dev/null 2>&1 || [ ! -e "/usr/lib/postgresql/$pg_major/lib/wal2json.so" ]; then
  echo "bench: installing pgcopydb and postgresql-$pg_major-wal2json" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends pgcopydb "postgresql-$pg_major-wal2json" >/dev/null
fi
command -v pgcopydb >/dev/null 2>&1 || { echo "bench: pgcopydb still missing after install" >&2; exit 1; }
