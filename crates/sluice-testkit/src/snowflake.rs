//! Reading what landed in the Snowflake stand-in the way a user's tools do: with Snowflake's own
//! Python connector (installed by scripts/setup.sh into `.deps/fakesnow`), never Sluice's client.

use crate::{fakesnow_python, SnowflakeServer};

const READER: &str = "import sys, json, snowflake.connector as s
c = s.connect(user='check', password='check', account='check', host='127.0.0.1', port=int(sys.argv[1]),
              protocol='http', database=sys.argv[2], schema='PUBLIC')
try:
    rows = c.cursor().execute(sys.argv[3]).fetchall()
except s.errors.ProgrammingError as e:
    if e.errno != 2003:  # no such table (yet)
        raise
    rows = []
print(json.dumps([[None if v is None else str(v) for v in r] for r in rows]))
";

/// What `sql` returns in `database` (schema PUBLIC), values as Python's `str()`, `None` for NULL;
/// no rows when a table it names does not exist yet. Panics with the connector's error and the
/// server's log otherwise.
pub fn snowflake_query(server: &SnowflakeServer, database: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let python = fakesnow_python().unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(python)
        .args(["-c", READER, &server.port().to_string(), database, sql])
        .output()
        .unwrap_or_else(|e| panic!("run Snowflake's Python connector: {e}"));
    assert!(
        out.status.success(),
        "{sql}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_tail(20)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}
