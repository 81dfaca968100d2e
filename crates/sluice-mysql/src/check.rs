//! Preflight checks of a MySQL/MariaDB source (`sluice check`), each with the fix on failure.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use sluice_core::CheckResult;

use crate::catalog;
use crate::config::MySqlSourceConfig;

/// Runs every check against the source.
pub async fn check_source(cfg: &MySqlSourceConfig, pipeline: &str) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let url = cfg.url.expose();
    let mut conn = match catalog::connect(url, "source").await {
        Ok(c) => c,
        Err(e) => {
            out.push(CheckResult::fail(
                "source: connect",
                format!("{e}; check source.url (host, port, user, password) and that the server is up"),
            ));
            return out;
        }
    };
    let info = match catalog::server_info(&mut conn).await {
        Ok(i) => i,
        Err(e) => {
            out.push(CheckResult::fail("source: server", e.to_string()));
            return out;
        }
    };
    out.push(CheckResult::pass("source: connect", format!("{} {}", crate::describe_url(url), info.version)));
    let log_bin = global(&mut conn, "log_bin").await;
    let on = |v: &Option<String>| v.as_deref().is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("ON"));
    out.push(if on(&log_bin) {
        CheckResult::pass("source: log_bin", "the binary log is on")
    } else {
        CheckResult::fail(
            "source: log_bin",
            "the binary log is off; start the server with log_bin (e.g. log_bin = mysql-bin in my.cnf) and a unique \
             server_id, then restart it",
        )
    });
    let expect = [
        ("binlog_format", "ROW", "SET GLOBAL binlog_format = 'ROW' (and binlog_format = ROW in my.cnf)"),
        ("binlog_row_image", "FULL", "SET GLOBAL binlog_row_image = 'FULL' (and binlog_row_image = FULL in my.cnf)"),
        (
            "binlog_row_metadata",
            "FULL",
            "SET GLOBAL binlog_row_metadata = 'FULL' (and binlog_row_metadata = FULL in my.cnf); table maps then carry \
             column names, so schema changes mid-stream are read right",
        ),
    ];
    for (name, want, fix) in expect {
        let v = global(&mut conn, name).await;
        let label = format!("source: {name} = {want}");
        out.push(match v {
            Some(v) if v.eq_ignore_ascii_case(want) => CheckResult::pass(label, format!("{name} is {v}")),
            Some(v) => CheckResult::fail(label, format!("{name} is {v}; run {fix}")),
            None if name == "binlog_row_metadata" => CheckResult::fail(
                label,
                "the server has no binlog_row_metadata (MySQL before 8.0.1, MariaDB before 10.5): column names come \
                 from the catalog, which is wrong after a schema change; upgrade the server",
            ),
            None => CheckResult::fail(label, format!("cannot read {name}; run {fix}")),
        });
    }
    if !info.mariadb {
        let v = global(&mut conn, "binlog_row_value_options").await;
        if v.as_deref().is_some_and(|v| !v.is_empty()) {
            out.push(CheckResult::fail(
                "source: binlog_row_value_options",
                "partial JSON updates are logged; run SET GLOBAL binlog_row_value_options = ''",
            ));
        }
    }
    out.push(privileges(&mut conn, cfg).await);
    // Tables and SELECT on them.
    match catalog::selected_tables(&mut conn, &cfg.filter()).await {
        Ok(t) if t.is_empty() => out.push(CheckResult::fail(
            "source: tables",
            format!("no table matches {:?} (minus exclude {:?}), or the user cannot see them", cfg.tables, cfg.exclude),
        )),
        Ok(tables) => {
            let mut bad = Vec::new();
            let mut keyless = Vec::new();
            for t in &tables {
                let sql = format!("SELECT 1 FROM {} LIMIT 0", catalog::qualified(&t.id));
                if let Err(e) = conn.query_drop(sql).await {
                    bad.push(format!("{}: {e} (GRANT SELECT ON {}.* TO <user>)", t.id, catalog::quote(&t.id.schema)));
                    continue;
                }
                match catalog::table_columns(&mut conn, &t.id).await {
                    Ok(cols) if cols.iter().any(|c| c.key_pos.is_some()) => {}
                    Ok(_) => keyless.push(t.id.to_string()),
                    Err(e) => bad.push(e.to_string()),
                }
            }
            out.push(if bad.is_empty() {
                CheckResult::pass(
                    "source: tables",
                    match keyless.is_empty() {
                        true => format!("{} tables selected, each readable and keyed", tables.len()),
                        false => format!(
                            "{} tables selected, each readable; without a primary or NOT NULL unique key: {} (their \
                             changes are matched by every column; a MySQL sink quarantines them; add a key with \
                             ALTER TABLE .. ADD PRIMARY KEY (..))",
                            tables.len(),
                            keyless.join(", ")
                        ),
                    },
                )
            } else {
                CheckResult::fail("source: tables", bad.join("; "))
            });
        }
        Err(e) => out.push(CheckResult::fail("source: tables", e.to_string())),
    }
    // A unique server id among the replicas.
    let id = cfg.server_id(pipeline);
    let server: Option<Option<String>> = conn.query_first("SELECT @@GLOBAL.server_id").await.unwrap_or(None);
    let server_id = server.flatten().and_then(|s| s.parse::<u32>().ok());
    let replicas: Vec<mysql_async::Row> = match conn.query("SHOW SLAVE HOSTS").await {
        Ok(r) => r,
        Err(_) => conn.query("SHOW REPLICAS").await.unwrap_or_default(),
    };
    let taken = replicas.iter().any(|r| r.get::<Option<u32>, _>(0).flatten() == Some(id));
    out.push(if server_id == Some(id) {
        CheckResult::fail(
            "source: server_id",
            format!("source.server_id {id} is the source server's own id; set another source.server_id"),
        )
    } else if taken {
        CheckResult::fail(
            "source: server_id",
            format!(
                "a replica with server id {id} is connected (another sluice running this pipeline, or a replica \
                 server); give each pipeline its own source.server_id"
            ),
        )
    } else {
        CheckResult::pass("source: server_id", format!("{id} is not in use"))
    });
    let _ = conn.disconnect().await;
    out
}

/// REPLICATION SLAVE and REPLICATION CLIENT (MariaDB 10.5+: BINLOG MONITOR / REPLICATION
/// SLAVE ADMIN cover them), from `SHOW GRANTS`.
async fn privileges(conn: &mut Conn, _cfg: &MySqlSourceConfig) -> CheckResult {
    let grants: Vec<String> = match conn.query("SHOW GRANTS").await {
        Ok(g) => g,
        Err(e) => return CheckResult::fail("source: privileges", format!("cannot read SHOW GRANTS: {e}")),
    };
    let all = grants.join(" ").to_ascii_uppercase();
    let has = |p: &str| all.contains("ALL PRIVILEGES ON *.*") || all.contains(p);
    let slave = has("REPLICATION SLAVE");
    let client = has("REPLICATION CLIENT") || has("BINLOG MONITOR") || has("SUPER");
    if slave && client {
        CheckResult::pass("source: privileges", "REPLICATION SLAVE and REPLICATION CLIENT")
    } else {
        let mut missing = Vec::new();
        if !slave {
            missing.push("REPLICATION SLAVE");
        }
        if !client {
            missing.push("REPLICATION CLIENT");
        }
        CheckResult::fail(
            "source: privileges",
            format!("missing {}; run GRANT {} ON *.* TO <user>", missing.join(" and "), missing.join(", ")),
        )
    }
}

/// A global variable's value, `None` when the server has no such variable.
async fn global(conn: &mut Conn, name: &str) -> Option<String> {
    let v: Result<Option<Option<String>>, _> = conn.query_first(format!("SELECT @@GLOBAL.{name}")).await;
    v.ok().flatten().flatten()
}

/// Preflight checks of a MySQL sink: it connects, and may create tables in its database and
/// the checkpoint database.
pub async fn check_sink(cfg: &crate::sink::MySqlSinkConfig, at: &str) -> Vec<CheckResult> {
    let url = cfg.url.expose();
    let mut conn = match catalog::connect(url, "sink").await {
        Ok(c) => c,
        Err(e) => {
            return vec![CheckResult::fail(
                format!("{at}: connect"),
                format!("{e}; check {at}.url (host, port, user, password, database) and that the server is up"),
            )]
        }
    };
    let mut out = vec![CheckResult::pass(format!("{at}: connect"), crate::describe_url(url))];
    let grants: Vec<String> = conn.query("SHOW GRANTS").await.unwrap_or_default();
    let all = grants.join(" ").to_ascii_uppercase();
    let can =
        all.contains("ALL PRIVILEGES") || (all.contains("CREATE") && all.contains("INSERT") && all.contains("DELETE"));
    out.push(if can {
        CheckResult::pass(format!("{at}: privileges"), "may create tables and write rows")
    } else {
        CheckResult::fail(
            format!("{at}: privileges"),
            format!(
                "the user needs CREATE, ALTER, INSERT, UPDATE, DELETE and SELECT on the target database and on {}; \
                 run GRANT CREATE, ALTER, INSERT, UPDATE, DELETE, SELECT ON <database>.* TO <user>",
                cfg.checkpoint_database
            ),
        )
    });
    let _ = conn.disconnect().await;
    out
}
