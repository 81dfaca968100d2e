"""fakesnow's server (PyPI fakesnow 0.12.1, Snowflake's client REST protocol over DuckDB) with
what a sink needs of Snowflake and fakesnow does not serve, answered here:

- session ids: the login answers `sessionId`; `SELECT CURRENT_SESSION()` returns it;
- named transactions: `BEGIN [TRANSACTION] [NAME n]` (the name is kept here, DuckDB gets BEGIN);
- `SHOW TRANSACTIONS`: the open transactions of every session (id, user, session, name,
  started_on, state, scope), as Snowflake lists the current user's;
- `SELECT SYSTEM$ABORT_TRANSACTION(id)` and `SELECT SYSTEM$ABORT_SESSION(id)`: roll back what that
  session holds open (the session is closed too for the latter), as Snowflake does for a client
  that went away.

Usage: python fakesnow_server.py PORT_FILE
(listens on a free loopback port it binds itself, then writes the port number to PORT_FILE, so
the caller never talks to another process that took a port it picked first)
"""

import itertools
import json
import gzip
import re
import sys
import time
import uuid

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import Route

import fakesnow.server as fs

session_ids: dict[str, int] = {}
open_txns: dict[str, dict] = {}
# Statements running per session: an abort waits for them (fakesnow runs a session's statements on
# one DuckDB cursor, which must not be rolled back under a running statement; Snowflake cancels it).
in_flight: dict[str, int] = {}
ids = itertools.count(1_700_000_000_000)

BEGIN = re.compile(r"^\s*(BEGIN|START)(\s+(WORK|TRANSACTION))?(\s+NAME\s+(\S+))?\s*;?\s*$", re.I)
ABORT = re.compile(r"^\s*SELECT\s+SYSTEM\$ABORT_(TRANSACTION|SESSION)\s*\(\s*(?:'?(\d+)'?|(\?))\s*\)\s*;?\s*$", re.I)
END = re.compile(r"^\s*(COMMIT|ROLLBACK)(\s+(WORK|TRANSACTION))?\s*;?\s*$", re.I)


class Rebodied:
    """The request with another (plain) body."""

    def __init__(self, request, body: bytes):
        self._request = request
        self._body = body
        self.headers = Headers(raw=[(k, v) for k, v in request.headers.raw if k.lower() != b"content-encoding"])

    async def body(self) -> bytes:
        return self._body

    def __getattr__(self, name):
        return getattr(self._request, name)


def rows(columns: list[str], values: list[list]) -> JSONResponse:
    return JSONResponse(
        {
            "data": {
                "rowtype": [
                    {"name": c, "type": "text", "nullable": True, "length": 16777216, "precision": None, "scale": None,
                     "byteLength": 16777216, "database": "", "schema": "", "table": "", "collation": None}
                    for c in columns
                ],
                "rowset": [[None if v is None else str(v) for v in r] for r in values],
                "queryResultFormat": "json",
                "total": len(values),
                "returned": len(values),
                "queryId": str(uuid.uuid4()),
                "statementTypeId": 4096,
                "parameters": [{"name": "TIMEZONE", "value": "Etc/UTC"}],
            },
            "success": True,
        }
    )


def error(code: str, message: str) -> JSONResponse:
    return JSONResponse({"data": {"errorCode": code, "sqlState": "02000"}, "code": code, "message": message,
                         "success": False})


async def abort(token: str, close: bool) -> None:
    import asyncio
    while in_flight.get(token, 0) > 0:
        await asyncio.sleep(0.01)
    conn = fs.sessions.get(token)
    if conn is not None:
        try:
            conn.rollback()
        except Exception:  # nothing open
            pass
        if close:
            fs.sessions.pop(token, None)
    open_txns.pop(token, None)


async def login(request):
    answer = await fs.login_request(request)
    body = json.loads(answer.body)
    if body.get("success"):
        sid = next(ids)
        session_ids[body["data"]["token"]] = sid
        body["data"]["sessionId"] = sid
    return JSONResponse(body, status_code=answer.status_code)


async def query(request):
    token = request.headers.get("Authorization", "")[17:-1]
    in_flight[token] = in_flight.get(token, 0) + 1
    try:
        return await run(request, token)
    finally:
        in_flight[token] -= 1


async def run(request, token):
    raw = await request.body()
    if request.headers.get("Content-Encoding") == "gzip":
        raw = gzip.decompress(raw)
    body = json.loads(raw)
    sql = body.get("sqlText", "")
    if token not in fs.sessions:
        return await fs.query_request(Rebodied(request, raw))
    if re.match(r"^\s*SELECT\s+CURRENT_SESSION\s*\(\s*\)\s*;?\s*$", sql, re.I):
        return rows(["CURRENT_SESSION()"], [[session_ids.get(token)]])
    if re.match(r"^\s*SHOW\s+TRANSACTIONS\s*;?\s*$", sql, re.I):
        listed = [[t["id"], t["user"], session_ids.get(tok), t["name"], t["started_on"], "running", "statement"]
                  for tok, t in open_txns.items()]
        return rows(["id", "user", "session", "name", "started_on", "state", "scope"], listed)
    if m := ABORT.match(sql):
        bound = (body.get("bindings") or {}).get("1", {}).get("value")
        kind, target = m.group(1).upper(), int(m.group(2) if m.group(2) else bound)
        for tok in list(fs.sessions):
            held = open_txns.get(tok)
            if (kind == "SESSION" and session_ids.get(tok) == target) or (kind == "TRANSACTION" and held and held["id"] == target):
                await abort(tok, close=kind == "SESSION")
                return rows([f"SYSTEM$ABORT_{kind}({target})"], [[f"Aborted {kind.lower()} {target}"]])
        return error("000604", f"{kind.lower()} {target} not found")
    if m := BEGIN.match(sql):
        answer = await fs.query_request(Rebodied(request, json.dumps({**body, "sqlText": "BEGIN"}).encode()))
        if json.loads(answer.body).get("success"):
            open_txns[token] = {"id": next(ids), "name": m.group(5) or "", "user": "FAKE",
                                "started_on": time.strftime("%Y-%m-%d %H:%M:%S")}
        return answer
    answer = await fs.query_request(Rebodied(request, raw))
    if END.match(sql):
        open_txns.pop(token, None)
    return answer


async def close(request):
    token = request.headers.get("Authorization", "")[17:-1]
    # A session closed by its client ends its transaction, as Snowflake rolls it back.
    await abort(token, close=False)
    session_ids.pop(token, None)
    return await fs.session(request)


routes = [
    Route("/session/v1/login-request", login, methods=["POST"]),
    Route("/queries/v1/query-request", query, methods=["POST"]),
    Route("/session", close, methods=["POST"]),
] + [r for r in fs.routes if r.path not in ("/session/v1/login-request", "/queries/v1/query-request", "/session")]

app = Starlette(routes=routes)

if __name__ == "__main__":
    import os
    import socket

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port_file = sys.argv[1]
    with open(port_file + ".tmp", "w") as f:
        f.write(str(listener.getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listener])
