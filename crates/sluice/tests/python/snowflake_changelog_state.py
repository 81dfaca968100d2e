"""Folds a Snowflake change-log table (the Kafka connector's RECORD_METADATA/RECORD_CONTENT shape)
into the table's current state, reading it with Snowflake's own Python connector, as a user's
MERGE would: every entry in `position` order (copied rows, `r`, carry one too); `d` removes the
key, `t` empties the table. Prints JSON: {"rows": [[col values as text]...] sorted by the first column,
"changes": n, "duplicates": changes sharing a position, "copied": n, "copied_keys": distinct}.
Usage: python snowflake_changelog_state.py PORT TABLE COL [COL ...]
"""
import json
import sys

import snowflake.connector

port, table, cols = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
c = snowflake.connector.connect(user="check", password="check", account="check", host="127.0.0.1", port=port,
                                protocol="http", database="STREAMING", schema="PUBLIC")
try:
    entries = c.cursor().execute(
        f'SELECT RECORD_METADATA::TEXT, RECORD_CONTENT::TEXT FROM "{table}"').fetchall()
except snowflake.connector.errors.ProgrammingError as e:
    if e.errno != 2003:
        raise
    entries = []
entries = [(json.loads(m), None if c is None else json.loads(c)) for m, c in entries]
copied = [e for e in entries if e[0]["operation"] == "r"]
changes = [e for e in entries if e[0]["operation"] != "r"]
state = {}
for meta, content in sorted(entries, key=lambda e: e[0]["position"]):
    key = json.dumps(meta["key"], sort_keys=True)
    op = meta["operation"]
    if op == "t":
        state.clear()
    elif op == "d":
        state.pop(key, None)
    else:
        state[key] = content
rows = [[None if r.get(col) is None else str(r[col]) for col in cols] for r in state.values()]
rows.sort(key=lambda r: int(r[0]))
positions = sorted(e[0]["position"] for e in entries)
print(json.dumps({
    "rows": rows,
    "changes": len(changes),
    "duplicates": len(positions) - len(set(positions)),
    "copied": len(copied),
    "copied_keys": len({json.dumps(e[0]["key"], sort_keys=True) for e in copied}),
    "truncates": [e[0]["position"] for e in changes if e[0]["operation"] == "t"],
    "last_positions": positions[-3:],
}))
