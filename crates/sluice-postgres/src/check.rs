//! Preflight checks for `sluice check`: each says what it looked at, and on failure how to fix
//! it.

use sluice_core::CheckResult;

use crate::catalog;
use crate::config::{PgSinkConfig, PgSourceConfig};
use crate::ident::qualified;

fn pass(name: impl Into<String>, detail: impl Into<String>) -> CheckResult {
    CheckResult::pass(name, detail)
}

fn fail(name: impl Into<String>, detail: impl Into<String>) -> CheckResult {
    CheckResult::fail(name, detail)
}

/// Checks a PostgreSQL source: reachable, `wal_level`, privileges, free slots and senders,
/// selected tables and their keys.
pub async fn check_source(cfg: &PgSourceConfig, slot: &str) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let client = match catalog::connect(cfg.url.expose(), "source").await {
        Ok(c) => {
            out.push(pass("source: reachable", cfg.url.redacted()));
            c
        }
        Err(e) => {
            out.push(fail(
                "source: reachable",
                format!(
                    "{} ({}); check source.url, that the server runs, and pg_hba.conf",
                    e.describe(),
                    cfg.url.redacted()
                ),
            ));
            return out;
        }
    };
    let setting = |name: &'static str| {
        let client = &client;
        async move {
            client
                .query_one("SELECT current_setting($1)", &[&name])
                .await
                .map(|r| r.get::<_, String>(0))
                .unwrap_or_default()
        }
    };
    let wal_level = setting("wal_level").await;
    out.push(if wal_level == "logical" {
        pass("source: wal_level = logical", "")
    } else {
        fail(
            "source: wal_level = logical",
            format!(
                "wal_level is '{wal_level}'; run ALTER SYSTEM SET wal_level = logical (or set it in postgresql.conf) \
                 and restart the server"
            ),
        )
    });
    let privileges = client
        .query_one("SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false);
    out.push(if privileges {
        pass("source: replication privilege", "")
    } else {
        fail(
            "source: replication privilege",
            "the user lacks REPLICATION; run ALTER ROLE <user> WITH REPLICATION as a superuser",
        )
    });
    let max_slots: i64 = setting("max_replication_slots").await.parse().unwrap_or(0);
    let used_slots: i64 = client
        .query_one("SELECT count(*) FROM pg_replication_slots WHERE slot_name <> $1", &[&slot])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    out.push(if used_slots < max_slots {
        pass("source: free replication slot", format!("{used_slots} of {max_slots} in use by others"))
    } else {
        fail(
            "source: free replication slot",
            format!("all {max_slots} slots are in use; drop an unused slot or raise max_replication_slots and restart"),
        )
    });
    let max_senders: i64 = setting("max_wal_senders").await.parse().unwrap_or(0);
    let used_senders: i64 =
        client.query_one("SELECT count(*) FROM pg_stat_replication", &[]).await.map(|r| r.get(0)).unwrap_or(0);
    out.push(if used_senders < max_senders {
        pass("source: free WAL sender", format!("{used_senders} of {max_senders} in use"))
    } else {
        fail(
            "source: free WAL sender",
            format!("all {max_senders} WAL senders are busy; raise max_wal_senders and restart"),
        )
    });
    let version: i32 = setting("server_version_num").await.parse().unwrap_or(0);
    let name = "source: may write copy watermarks";
    if version < 140_000 {
        out.push(pass(
            name,
            format!(
                "server {version} is older than PostgreSQL 14: a fresh pipeline works, but tables created later and \
                 sinks added later cannot be copied while streaming"
            ),
        ));
    } else {
        let may = client
            .query_one("SELECT has_function_privilege('pg_logical_emit_message(boolean,text,text)', 'EXECUTE')", &[])
            .await
            .map(|r| r.get::<_, bool>(0))
            .unwrap_or(false);
        out.push(if may {
            pass(name, "")
        } else {
            fail(
                name,
                "the user may not execute pg_logical_emit_message, which marks where a copy of a live table starts \
                 and ends; run GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO <user>",
            )
        });
    }
    match catalog::selected_tables(&client, &cfg.filter()).await {
        Err(e) => out.push(fail("source: selected tables exist", e.describe())),
        Ok(tables) if tables.is_empty() => out.push(fail(
            "source: selected tables exist",
            format!(
                "no table matches source.tables {:?} minus source.exclude {:?}; fix the globs",
                cfg.tables, cfg.exclude
            ),
        )),
        Ok(tables) => {
            out.push(pass("source: selected tables exist", format!("{} tables", tables.len())));
            for t in tables {
                let name = format!("source: {} has a key", t.id);
                match catalog::key_columns(&client, t.oid).await {
                    Ok(k) if !k.is_empty() => out.push(pass(
                        name,
                        format!("({}), replica identity {}", k.join(", "), identity_name(t.replica_identity)),
                    )),
                    Ok(_) if t.replica_identity == 'f' => out.push(pass(
                        name,
                        "none; replica identity full: rows are matched whole (updates and deletes scan the replica \
                         table)",
                    )),
                    Ok(_) => out.push(fail(
                        name,
                        format!(
                            "no primary key or replica identity index; add a primary key, or run ALTER TABLE {t} \
                             REPLICA IDENTITY USING INDEX <unique index>, or ALTER TABLE {t} REPLICA IDENTITY FULL, or \
                             list it in source.exclude",
                            t = qualified(&t.id)
                        ),
                    )),
                    Err(e) => out.push(fail(name, e.describe())),
                }
            }
        }
    }
    out
}

fn identity_name(c: char) -> &'static str {
    match c {
        'f' => "full",
        'i' => "index",
        'n' => "nothing",
        _ => "default",
    }
}

/// Checks a PostgreSQL sink: reachable and allowed to create tables.
pub async fn check_sink(cfg: &PgSinkConfig, at: &str) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let client = match catalog::connect(cfg.url.expose(), at).await {
        Ok(c) => {
            out.push(pass(format!("{at}: reachable"), cfg.url.redacted()));
            c
        }
        Err(e) => {
            out.push(fail(
                format!("{at}: reachable"),
                format!("{} ({}); check {at}.url and that the server runs", e.describe(), cfg.url.redacted()),
            ));
            return out;
        }
    };
    let can_create = client
        .query_one("SELECT has_database_privilege(current_database(), 'CREATE')", &[])
        .await
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false);
    out.push(if can_create {
        pass(format!("{at}: may create schemas and tables"), "")
    } else {
        fail(
            format!("{at}: may create schemas and tables"),
            "run GRANT CREATE ON DATABASE <db> TO <user> on the target",
        )
    });
    out
}
