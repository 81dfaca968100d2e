//! Reading DuckDB files the way a user's tools do: with DuckDB's own Python package (installed by
//! scripts/setup.sh), never with Sluice's code. A sink holds its file only while it commits, so
//! the reader opens it read-only and waits while a commit runs.

use std::path::Path;
use std::process::Command;

const READER: &str = r#"
import sys, time, json, duckdb
path, sql = sys.argv[1], sys.argv[2]
deadline = time.time() + 30
while True:
    try:
        c = duckdb.connect(path, read_only=True)
        break
    except duckdb.IOException as e:
        if 'lock' not in str(e).lower() or time.time() > deadline:
            raise
        time.sleep(0.02)
try:
    rows = c.execute(sql).fetchall()
except (duckdb.CatalogException, duckdb.BinderException):
    rows = None
if rows is None:
    print('"<not yet>"')
else:
    for r in rows:
        print(json.dumps([None if v is None else str(v) for v in r]))
"#;

/// What `sql` returns from the DuckDB file at `path`: values as Python's `str()`, `None` for
/// NULL. `Ok(None)` when the query names a table or column that does not exist (yet).
pub fn duckdb_query(path: &Path, sql: &str) -> Result<Option<Vec<Vec<Option<String>>>>, String> {
    let out = Command::new("python3")
        .args(["-c", READER])
        .arg(path)
        .arg(sql)
        .output()
        .map_err(|e| format!("run python3 (scripts/setup.sh installs DuckDB's package): {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim() == "\"<not yet>\"" {
        return Ok(None);
    }
    text.lines()
        .map(|l| serde_json::from_str::<Vec<Option<String>>>(l).map_err(|e| format!("{e}: {l}")))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}
