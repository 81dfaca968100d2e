//! Reading DuckDB files and Parquet files the way a user's tools do: with DuckDB's own Python
//! package, and S3 with boto3 (both installed by scripts/setup.sh), never with Sluice's code. A
//! sink holds its DuckDB file only while it commits, so the reader opens it read-only and waits
//! while a commit runs.

use std::path::Path;
use std::process::Command;

const READER: &str = r#"
import sys, time, json, duckdb
path, sql = sys.argv[1], sys.argv[2]
deadline = time.time() + 30
while True:
    try:
        c = duckdb.connect(path, read_only=True) if path != ':memory:' else duckdb.connect()
        break
    except duckdb.IOException as e:
        if 'lock' not in str(e).lower() or time.time() > deadline:
            raise
        time.sleep(0.02)
try:
    rows = c.execute(sql).fetchall()
except (duckdb.CatalogException, duckdb.BinderException):
    rows = None
except duckdb.IOException as e:
    if 'No files found' not in str(e):
        raise
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

/// What `sql` returns when run by DuckDB's Python package on no file (Parquet files are read with
/// `read_parquet` in `sql`). `Ok(None)` when a glob matches no file or a column does not exist.
pub fn parquet_query(sql: &str) -> Result<Option<Vec<Vec<Option<String>>>>, String> {
    duckdb_query(Path::new(":memory:"), sql)
}

const S3_DOWNLOAD: &str = r#"
import sys, os, boto3, botocore.exceptions
endpoint, bucket, prefix, dest = sys.argv[1:5]
s3 = boto3.client('s3', endpoint_url=endpoint, region_name='us-east-1',
                  aws_access_key_id='check', aws_secret_access_key='check')
n = 0
for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=prefix):
    for o in page.get('Contents', []):
        path = os.path.join(dest, o['Key'])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            s3.download_file(bucket, o['Key'], path)
        except botocore.exceptions.ClientError as e:
            # Deleted since the listing (a compaction replaced it): the caller reads again.
            if e.response.get('Error', {}).get('Code') not in ('404', 'NoSuchKey'):
                raise
            continue
        n += 1
print(n)
"#;

/// Copies every object under `prefix` of `bucket` into `dest` (keys as paths), with boto3;
/// returns how many.
pub fn s3_download(endpoint: &str, bucket: &str, prefix: &str, dest: &Path) -> Result<usize, String> {
    let out = Command::new("python3")
        .args(["-c", S3_DOWNLOAD, endpoint, bucket, prefix])
        .arg(dest)
        .output()
        .map_err(|e| format!("run python3 (scripts/setup.sh installs boto3): {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|e| format!("{e}"))
}
