"""Checks the test kit's Snowflake stand-in with Snowflake's own Python connector: two sessions
with their ids, a named transaction listed by SHOW TRANSACTIONS, aborted from the other session
by SYSTEM$ABORT_TRANSACTION (its insert gone, the table writable), and SYSTEM$ABORT_SESSION.
Usage: python snowflake_check.py PORT
"""
import sys

import snowflake.connector

port = int(sys.argv[1])


def connect():
    return snowflake.connector.connect(user="check", password="check", account="check", host="127.0.0.1",
                                       port=port, protocol="http", database="KIT", schema="PUBLIC")


a, b = connect(), connect()
ca, cb = a.cursor(), b.cursor()
(sa,) = ca.execute("SELECT CURRENT_SESSION()").fetchone()
(sb,) = cb.execute("SELECT CURRENT_SESSION()").fetchone()
assert sa != sb, (sa, sb)
ca.execute("CREATE TABLE t (id INT, v TEXT)")
ca.execute("BEGIN NAME sluice_kit")
ca.execute("INSERT INTO t VALUES (1, 'lost')")
listed = cb.execute("SHOW TRANSACTIONS").fetchall()
assert [(r[2], r[3]) for r in listed] == [(sa, "sluice_kit")], listed
cb.execute(f"SELECT SYSTEM$ABORT_TRANSACTION({listed[0][0]})")
assert cb.execute("SHOW TRANSACTIONS").fetchall() == []
cb.execute("INSERT INTO t VALUES (2, 'kept')")
assert cb.execute("SELECT id, v FROM t ORDER BY id").fetchall() == [(2, "kept")]
ca.execute("BEGIN")
ca.execute("INSERT INTO t VALUES (3, 'lost too')")
cb.execute(f"SELECT SYSTEM$ABORT_SESSION({sa})")
assert cb.execute("SELECT id FROM t ORDER BY id").fetchall() == [(2,)]
print("ok")
