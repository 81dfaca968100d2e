#!/usr/bin/env python3
"""CPU use per process kind, every 100 ms, while a benchmark runs (Linux /proc).

    bench/cpu-timeline.py > timeline.txt &  bench/drain --skip-pgcopydb;  kill %1

Each line: seconds since start, then milliseconds of CPU per 100 ms for each kind seen busy:
sluice, walsender (the source's), source (other backends of the source database, `bench`),
target (backends of a database named replica*, and native logical replication's apply
worker), recvlogical (pg_recvlogical). 100 = one full core.
"""
import os
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def kind(cmd):
    argv = cmd.split(" ")
    if len(argv) > 1 and os.path.basename(argv[0]).startswith("sluice") and argv[1] == "run":
        return "sluice"  # also a copy under another name (BENCH_SLUICE_BIN=/tmp/sluice-new)
    if "walsender" in cmd:
        return "walsender"
    if "logical replication" in cmd and "worker" in cmd:
        return "target"
    if cmd.startswith("postgres: ") and " replica" in cmd:
        return "target"
    if cmd.startswith("postgres: ") and " bench " in cmd:
        return "source"
    if "pg_recvlogical" in cmd:
        return "recvlogical"
    return None


def sample():
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        k = kind(cmd)
        if k:
            fields = stat[stat.rfind(")") + 2 :].split()
            out[pid] = (k, (int(fields[11]) + int(fields[12])) / HZ)
    return out


def main():
    prev, t0 = sample(), time.time()
    while True:
        time.sleep(0.1)
        cur, busy = sample(), {}
        for pid, (k, cpu) in cur.items():
            busy[k] = busy.get(k, 0.0) + cpu - prev.get(pid, (k, cpu))[1]
        prev = cur
        if any(v > 0 for v in busy.values()):
            cols = " ".join(f"{k}={v * 1000:.0f}" for k, v in sorted(busy.items()))
            print(f"{time.time() - t0:7.1f} {cols}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
