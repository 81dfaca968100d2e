//! `sluice import kafka-connect FILE..`: Kafka Connect connector configurations (`.properties`,
//! or the JSON the Connect REST API takes) turned into one Sluice pipeline file.
//!
//! Understood: the Snowflake sink connector, Debezium's MySQL/MariaDB and PostgreSQL sources,
//! and the JDBC sinks (Confluent's and Debezium's). A Debezium source with sinks becomes a
//! pipeline that reads the database directly (the topics between them are not needed); sinks
//! alone read their topics with a Kafka source; a Debezium source alone writes Debezium's topics
//! with a Kafka sink. Every property is accounted for: mapped, not needed (and why), or not
//! mapped (and what to do). Secrets are never copied: they become `${VAR}` references.

use std::collections::{BTreeMap, BTreeSet};

/// One connector's configuration, tracking which properties were used.
pub struct Connector {
    /// The file it came from
    pub file: String,
    props: BTreeMap<String, String>,
    used: BTreeSet<String>,
    /// `(key, why)` of properties deliberately left out
    not_needed: Vec<(String, String)>,
    /// `(key, what to do)` of properties that need the user's attention
    todo: Vec<(String, String)>,
}

impl Connector {
    /// Reads Java properties or Kafka Connect JSON (`{"name":..,"config":{..}}` or the bare
    /// config object).
    pub fn parse(file: &str, text: &str) -> Result<Connector, String> {
        let props = if text.trim_start().starts_with('{') {
            let j: serde_json::Value =
                serde_json::from_str(text).map_err(|e| format!("{file}: not valid JSON: {e}"))?;
            let mut out = BTreeMap::new();
            let config = j.get("config").unwrap_or(&j);
            let obj = config.as_object().ok_or_else(|| format!("{file}: expected a JSON object of properties"))?;
            for (k, v) in obj {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.insert(k.clone(), v);
            }
            if let (Some(name), false) = (j.get("name").and_then(|n| n.as_str()), out.contains_key("name")) {
                out.insert("name".into(), name.to_string());
            }
            out
        } else {
            properties(text)
        };
        Ok(Connector { file: file.to_string(), props, used: BTreeSet::new(), not_needed: Vec::new(), todo: Vec::new() })
    }

    /// The value of `key`, marking it used.
    fn take(&mut self, key: &str) -> Option<String> {
        let v = self.props.get(key).cloned()?;
        self.used.insert(key.to_string());
        Some(v)
    }

    /// Marks every property starting with `prefix` as not needed, for `why`.
    fn skip(&mut self, prefix: &str, why: &str) {
        let keys: Vec<String> = self.props.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        for k in keys {
            if self.used.insert(k.clone()) {
                self.not_needed.push((k, why.to_string()));
            }
        }
    }

    /// Marks `key` (when present) as needing attention: `what` to do.
    fn attention(&mut self, key: &str, what: impl Into<String>) {
        if self.props.contains_key(key) {
            self.used.insert(key.to_string());
            self.todo.push((key.to_string(), what.into()));
        }
    }

    fn class(&self) -> &str {
        self.props.get("connector.class").map(String::as_str).unwrap_or("")
    }

    fn kind(&self) -> Kind {
        let c = self.class().to_ascii_lowercase();
        if c.contains("snowflake") {
            Kind::Snowflake
        } else if c.contains("debezium.connector.mysql") || c.contains("debezium.connector.mariadb") {
            Kind::DebeziumMysql
        } else if c.contains("debezium.connector.postgresql") {
            Kind::DebeziumPostgres
        } else if c.contains("jdbcsink") {
            Kind::JdbcSink
        } else {
            Kind::Unknown
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Snowflake,
    DebeziumMysql,
    DebeziumPostgres,
    JdbcSink,
    Unknown,
}

/// Java `.properties`: `key=value`, `key: value` or `key value`, `#`/`!` comments, `\`
/// continuations and escapes.
pub fn properties(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut logical = String::new();
    for raw in text.lines() {
        let line = raw.trim_start();
        if logical.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!')) {
            continue;
        }
        let continued = line.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1;
        logical.push_str(if continued { &line[..line.len() - 1] } else { line });
        if continued {
            continue;
        }
        let entry = std::mem::take(&mut logical);
        let mut key = String::new();
        let mut chars = entry.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => key.push(unescape(chars.next().unwrap_or('\\'))),
                '=' | ':' => break,
                c if c.is_whitespace() => {
                    while chars.peek().is_some_and(|c| c.is_whitespace()) {
                        chars.next();
                    }
                    if matches!(chars.peek(), Some('=' | ':')) {
                        chars.next();
                    }
                    break;
                }
                c => key.push(c),
            }
        }
        let rest: String = chars.collect();
        let mut value = String::new();
        let mut it = rest.trim_start().chars();
        while let Some(c) = it.next() {
            value.push(if c == '\\' { unescape(it.next().unwrap_or('\\')) } else { c });
        }
        out.insert(key, value);
    }
    out
}

fn unescape(c: char) -> char {
    match c {
        't' => '\t',
        'n' => '\n',
        'r' => '\r',
        'f' => '\u{c}',
        c => c,
    }
}

/// The pipeline file and what could not be mapped.
pub struct Imported {
    /// The pipeline, TOML, with the report as comments at its top
    pub toml: String,
    /// `file: key — what to do` for each property that needs attention
    pub unmapped: Vec<String>,
    /// Environment variables the file references (secrets)
    pub env: Vec<String>,
}

/// TOML text of a string (a JSON string is a valid TOML basic string).
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A `[section]`'s lines.
type Lines = Vec<String>;

/// Converts the connectors into one pipeline.
pub fn import(mut connectors: Vec<Connector>) -> Result<Imported, String> {
    if connectors.is_empty() {
        return Err("give at least one connector file".into());
    }
    for c in &connectors {
        if c.kind() == Kind::Unknown {
            return Err(format!(
                "{}: connector.class {:?} is not one sluice import knows (the Snowflake sink, Debezium MySQL/MariaDB \
                 and PostgreSQL sources, the JDBC sinks)",
                c.file,
                c.class()
            ));
        }
    }
    let is_source = |c: &Connector| matches!(c.kind(), Kind::DebeziumMysql | Kind::DebeziumPostgres);
    if connectors.iter().filter(|c| is_source(c)).count() > 1 {
        return Err("more than one source connector: a Sluice pipeline has one source; import them separately".into());
    }
    connectors.sort_by_key(|c| !is_source(c));
    let mut env: Vec<String> = Vec::new();
    let name = connectors
        .first_mut()
        .and_then(|c| c.take("name"))
        .map(|n| pipeline_name(&n))
        .unwrap_or_else(|| "imported".into());
    let has_source = is_source(&connectors[0]);
    let has_sinks = connectors.len() > (has_source as usize);
    let mut source: Lines = Vec::new();
    let mut sinks: Vec<Lines> = Vec::new();
    let mut topic_prefix = None;
    for (i, c) in connectors.iter_mut().enumerate() {
        if i > 0 {
            c.take("name");
        }
        c.take("connector.class");
        c.skip("tasks.max", "Sluice runs one process per pipeline (scale out with a Kafka source's consumer group)");
        match c.kind() {
            Kind::DebeziumMysql => {
                source = debezium_mysql(c, &mut env);
                topic_prefix = c.take("topic.prefix").or_else(|| c.take("database.server.name"));
            }
            Kind::DebeziumPostgres => {
                source = debezium_postgres(c, &mut env);
                topic_prefix = c.take("topic.prefix").or_else(|| c.take("database.server.name"));
            }
            Kind::Snowflake => sinks.push(snowflake(c, has_source, &mut env)),
            Kind::JdbcSink => sinks.push(jdbc(c, &mut env)?),
            Kind::Unknown => unreachable!("refused above"),
        }
        if has_source && i > 0 {
            c.skip(
                "topics",
                "Sluice delivers from the database directly: no topics in between (every table the source selects \
                 goes to every sink)",
            );
            c.skip("key.converter", "no Kafka in between");
            c.skip("value.converter", "no Kafka in between");
            c.skip("transforms", "no Kafka records in between (Sluice applies changes by key itself)");
            c.skip("errors.", "no Kafka records in between");
        }
    }
    if !has_source {
        source = kafka_source(&mut connectors, &mut env);
    }
    if !has_sinks {
        sinks.push(kafka_sink(&mut connectors[0], topic_prefix.as_deref(), &mut env));
    } else if has_source {
        connectors[0].skip("topic.prefix", "Sluice delivers from the database directly: no topics in between");
    }
    for c in connectors.iter_mut() {
        c.skip("key.converter", "records are written and read in the format the pipeline names");
        c.skip("value.converter", "records are written and read in the format the pipeline names");
    }
    // Report.
    let mut unmapped = Vec::new();
    let mut not_needed = Vec::new();
    for c in &mut connectors {
        let rest: Vec<String> = c.props.keys().filter(|k| !c.used.contains(*k)).cloned().collect();
        for k in rest {
            c.todo.push((k, "no Sluice equivalent: check docs/config.md".into()));
        }
        for (k, why) in &c.todo {
            unmapped.push(format!("{}: {k} — {why}", c.file));
        }
        for (k, why) in &c.not_needed {
            not_needed.push(format!("{}: {k} — {why}", c.file));
        }
    }
    env.sort();
    env.dedup();
    let mut out = String::new();
    out.push_str(&format!(
        "# Imported by `sluice import kafka-connect` from {}.\n",
        connectors.iter().map(|c| c.file.as_str()).collect::<Vec<_>>().join(", ")
    ));
    if !env.is_empty() {
        out.push_str(&format!("# Secrets are read from the environment: {}.\n", env.join(", ")));
    }
    if !unmapped.is_empty() {
        out.push_str("#\n# Not mapped (review these):\n");
        for u in &unmapped {
            out.push_str(&format!("#   {u}\n"));
        }
    }
    if !not_needed.is_empty() {
        out.push_str("#\n# Not needed with Sluice:\n");
        for u in &not_needed {
            out.push_str(&format!("#   {u}\n"));
        }
    }
    out.push_str(&format!("\nname = {}\n\n[source]\n", q(&name)));
    for l in &source {
        out.push_str(l);
        out.push('\n');
    }
    for s in &sinks {
        out.push_str("\n[[sink]]\n");
        for l in s {
            out.push_str(l);
            out.push('\n');
        }
    }
    Ok(Imported { toml: out, unmapped, env })
}

/// A pipeline name Sluice accepts: `a-z`, `0-9`, `_`, at most 40.
fn pipeline_name(n: &str) -> String {
    let s: String =
        n.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(40).collect();
    if s.is_empty() {
        "imported".into()
    } else {
        s
    }
}

/// A secret's `${VAR}` reference.
fn secret(c: &mut Connector, key: &str, var: &str, env: &mut Vec<String>) -> Option<String> {
    c.take(key)?;
    env.push(var.to_string());
    Some(format!("${{{var}}}"))
}

/// Debezium's comma-separated regular expressions as Sluice's globs; `None` for one that is
/// not a plain name with `.*` wildcards.
fn globs(list: &str, suffix: &str) -> Option<Vec<String>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|r| {
            let g = r.replace("\\.", "\u{0}").replace(".*", "*").replace('\u{0}', ".");
            let plain = g.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '*' | '$' | '-'));
            plain.then(|| format!("{g}{suffix}"))
        })
        .collect()
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", "))
}

/// The table selection of a Debezium source: `(tables, exclude)` lines.
fn selection(c: &mut Connector, lines: &mut Lines, db_key: &str) {
    for (include, key, suffix) in
        [(true, "table.include.list", ""), (true, db_key, ".*"), (false, "table.exclude.list", "")]
    {
        let Some(v) = c.take(key) else { continue };
        match globs(&v, suffix) {
            Some(g) if include => {
                if !lines.iter().any(|l| l.starts_with("tables")) {
                    lines.push(format!("tables = {}", list(&g)));
                }
            }
            Some(g) => lines.push(format!("exclude = {}", list(&g))),
            None => c.todo.push((
                key.to_string(),
                "a regular expression Sluice's globs cannot express: write `tables`/`exclude` globs (`schema.*`, `app.order_?`)".into(),
            )),
        }
    }
}

fn snapshot_mode(c: &mut Connector, lines: &mut Lines, when_needed: bool) {
    let Some(mode) = c.take("snapshot.mode") else { return };
    let m = match mode.as_str() {
        "initial" => Some("initial"),
        "never" | "no_data" | "schema_only" => Some("never"),
        "when_needed" if when_needed => Some("when_needed"),
        _ => None,
    };
    match m {
        Some(m) => lines.push(format!("snapshot = {}", q(m))),
        None => c.todo.push((
            "snapshot.mode".into(),
            format!(
                "{mode:?} has no Sluice equivalent: snapshot is \"initial\", \"never\" (or \"when_needed\" for MySQL)"
            ),
        )),
    }
}

fn debezium_common(c: &mut Connector) {
    c.skip("schema.history.internal", "Sluice reads table shapes from the stream itself (no schema history topic)");
    c.skip("database.history", "Sluice reads table shapes from the stream itself (no schema history topic)");
    c.skip("include.schema.changes", "schema changes reach sinks as new table shapes");
    c.skip("tombstones.on.delete", "sinks apply deletes themselves");
    c.skip("decimal.handling.mode", "decimals stay exact (docs/types.md)");
    c.skip("time.precision.mode", "times keep microseconds (docs/types.md)");
    c.skip("topic.creation.", "Sluice's Kafka sink creates topics itself (topic_partitions, replication_factor)");
    c.skip("heartbeat.", "Sluice sends heartbeats on its own");
    c.skip("provide.transaction.metadata", "sinks apply whole source transactions");
}

fn debezium_mysql(c: &mut Connector, env: &mut Vec<String>) -> Lines {
    let host = c.take("database.hostname").unwrap_or_else(|| "localhost".into());
    let port = c.take("database.port").unwrap_or_else(|| "3306".into());
    let user = c.take("database.user").unwrap_or_else(|| "root".into());
    let password = secret(c, "database.password", "MYSQL_PASSWORD", env);
    let auth = password.map(|p| format!("{user}:{p}")).unwrap_or(user);
    let mut lines = vec!["type = \"mysql\"".into(), format!("url = {}", q(&format!("mysql://{auth}@{host}:{port}")))];
    selection(c, &mut lines, "database.include.list");
    if let Some(v) = c.take("database.exclude.list") {
        match globs(&v, ".*") {
            Some(g) => lines.push(format!("exclude = {}", list(&g))),
            None => c.todo.push(("database.exclude.list".into(), "write `exclude` globs instead".into())),
        }
    }
    snapshot_mode(c, &mut lines, true);
    if let Some(id) = c.take("database.server.id") {
        lines.push(format!("server_id = {id}"));
    }
    if let Some(ms) = c.take("heartbeat.interval.ms").filter(|v| v.parse::<u64>().is_ok_and(|n| n > 0)) {
        lines.push(format!("heartbeat_ms = {ms}"));
    }
    c.attention(
        "database.ssl.mode",
        "TLS goes in the url: ?ssl_ca=PATH or ?require_ssl=true (docs/config.md, TLS to MySQL)",
    );
    debezium_common(c);
    lines
}

fn debezium_postgres(c: &mut Connector, env: &mut Vec<String>) -> Lines {
    let host = c.take("database.hostname").unwrap_or_else(|| "localhost".into());
    let port = c.take("database.port").unwrap_or_else(|| "5432".into());
    let user = c.take("database.user").unwrap_or_else(|| "postgres".into());
    let db = c.take("database.dbname").unwrap_or_else(|| "postgres".into());
    let password = secret(c, "database.password", "POSTGRES_PASSWORD", env);
    let auth = password.map(|p| format!("{user}:{p}")).unwrap_or(user);
    let mut url = format!("postgres://{auth}@{host}:{port}/{db}");
    if let Some(mode) = c.take("database.sslmode") {
        url.push_str(&format!("?sslmode={mode}"));
    }
    let mut lines = vec!["type = \"postgres\"".into(), format!("url = {}", q(&url))];
    selection(c, &mut lines, "schema.include.list");
    if let Some(v) = c.take("schema.exclude.list") {
        match globs(&v, ".*") {
            Some(g) => lines.push(format!("exclude = {}", list(&g))),
            None => c.todo.push(("schema.exclude.list".into(), "write `exclude` globs instead".into())),
        }
    }
    snapshot_mode(c, &mut lines, false);
    if let Some(slot) = c.take("slot.name") {
        lines.push(format!("slot = {}", q(&slot)));
    }
    if let Some(p) = c.take("publication.name") {
        lines.push(format!("publication = {}", q(&p)));
    }
    match c.take("plugin.name").as_deref() {
        None | Some("pgoutput") => {}
        Some(other) => c.todo.push((
            "plugin.name".into(),
            format!("{other:?}: Sluice uses pgoutput (built into PostgreSQL 10+); the slot is created with it"),
        )),
    }
    c.attention(
        "column.exclude.list",
        "leave columns out with a publication column list: CREATE PUBLICATION sluice_<name> FOR TABLE t (a, b) \
         before the first start (docs/config.md)",
    );
    c.attention(
        "column.include.list",
        "choose columns with a publication column list: CREATE PUBLICATION sluice_<name> FOR TABLE t (a, b) \
         before the first start (docs/config.md)",
    );
    c.skip("publication.autocreate.mode", "Sluice creates the publication and sets its tables at every start");
    c.skip("slot.drop.on.stop", "Sluice keeps its slot across restarts");
    debezium_common(c);
    lines
}

fn buffer(c: &mut Connector) -> Option<String> {
    let mut parts = Vec::new();
    for (key, name) in [
        ("buffer.count.records", "count_records"),
        ("buffer.flush.time", "flush_time_s"),
        ("buffer.size.bytes", "size_bytes"),
    ] {
        if let Some(v) = c.take(key) {
            match v.trim().parse::<u64>() {
                Ok(n) => parts.push(format!("{name} = {n}")),
                Err(_) => c.todo.push((key.into(), format!("{v:?} is not a whole number"))),
            }
        }
    }
    (!parts.is_empty()).then(|| format!("buffer = {{ {} }}", parts.join(", ")))
}

fn snowflake(c: &mut Connector, has_source: bool, env: &mut Vec<String>) -> Lines {
    if has_source {
        c.attention(
            "snowflake.topic2table.map",
            "with a database source the Snowflake tables are named after the source tables (upper-cased)",
        );
    }
    let mut lines = vec!["type = \"snowflake\"".to_string()];
    if let Some(u) = c.take("snowflake.url.name") {
        let host = u.trim_start_matches("https://").trim_start_matches("http://");
        let host = host.split('/').next().unwrap_or(host);
        let (host, port) = match host.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        };
        match host.strip_suffix(".snowflakecomputing.com") {
            Some(account) if !account.contains(".privatelink") && matches!(port, None | Some("443")) => {
                lines.push(format!("account = {}", q(account)))
            }
            _ => {
                let account = host.split('.').next().unwrap_or(host);
                lines.push(format!("account = {}", q(account)));
                lines.push(format!("url = {}", q(&format!("https://{host}:{}", port.unwrap_or("443")))));
            }
        }
    }
    if let Some(u) = c.take("snowflake.user.name") {
        lines.push(format!("user = {}", q(&u)));
    }
    if c.take("snowflake.private.key").is_some() {
        lines.push("private_key_file = \"rsa_key.p8\"".into());
        c.todo.push((
            "snowflake.private.key".into(),
            "Sluice reads the key from a file, never inline: save it as rsa_key.p8 between -----BEGIN PRIVATE KEY----- \
             and -----END PRIVATE KEY----- lines (the value was not copied)"
                .into(),
        ));
    } else if let Some(p) = secret(c, "snowflake.password", "SNOWFLAKE_PASSWORD", env) {
        lines.push(format!("password = {}", q(&p)));
    }
    c.attention(
        "snowflake.private.key.passphrase",
        "encrypted keys are not read: decrypt once with openssl pkcs8 -in rsa_key.p8 -nocrypt -out rsa_key.p8 (the value was not copied)",
    );
    for (key, name) in [
        ("snowflake.role.name", "role"),
        ("snowflake.warehouse.name", "warehouse"),
        ("snowflake.database.name", "database"),
        ("snowflake.schema.name", "schema"),
    ] {
        if let Some(v) = c.take(key) {
            lines.push(format!("{name} = {}", q(&v)));
        }
    }
    lines.push("mode = \"changelog\"".into());
    lines.push("# mode = \"replica\" keeps typed tables current instead (no STREAM, TASK or MERGE to write)".into());
    if let Some(b) = buffer(c) {
        lines.push(b);
    }
    if let Some(map) = c.take("snowflake.topic2table.map") {
        let pairs: Vec<String> = map
            .split(',')
            .filter_map(|p| p.split_once(':'))
            .map(|(t, tb)| format!("{} = {}", q(t.trim()), q(tb.trim())))
            .collect();
        lines.push(format!("topic2table = {{ {} }}", pairs.join(", ")));
    }
    c.skip(
        "snowflake.ingestion.method",
        "Sluice loads each flush with bound multi-row INSERTs in one transaction with its checkpoint (docs/snowflake.md)",
    );
    c.skip("snowflake.streaming.", "Sluice loads each flush in one transaction (docs/snowflake.md)");
    c.skip("snowflake.metadata.", "RECORD_METADATA always holds topic, partition, offset, CreateTime and key");
    c.attention(
        "snowflake.enable.schematization",
        "for typed tables kept current set mode = \"replica\" (a live replica, not an append-only log)",
    );
    lines
}

fn jdbc(c: &mut Connector, env: &mut Vec<String>) -> Result<Lines, String> {
    let url = c.take("connection.url").ok_or_else(|| format!("{}: connection.url is missing", c.file))?;
    let user = c.take("connection.user").or_else(|| c.take("connection.username"));
    let rest = url.strip_prefix("jdbc:").unwrap_or(&url);
    let (kind, var) = if rest.starts_with("postgresql:") {
        ("postgres", "SINK_POSTGRES_PASSWORD")
    } else if rest.starts_with("mysql:") || rest.starts_with("mariadb:") {
        ("mysql", "SINK_MYSQL_PASSWORD")
    } else {
        return Err(format!(
            "{}: connection.url {url:?}: Sluice's JDBC-style sinks are PostgreSQL and MySQL/MariaDB/TiDB",
            c.file
        ));
    };
    let password = secret(c, "connection.password", var, env);
    // jdbc:postgresql://host:port/db?params → postgres://user:pw@host:port/db?params
    let after = rest.split_once("//").map(|x| x.1).unwrap_or(rest);
    let auth = match (user, password) {
        (Some(u), Some(p)) => format!("{u}:{p}@"),
        (Some(u), None) => format!("{u}@"),
        _ => String::new(),
    };
    let scheme = if kind == "postgres" { "postgres" } else { "mysql" };
    let mut lines = vec![format!("type = {}", q(kind)), format!("url = {}", q(&format!("{scheme}://{auth}{after}")))];
    match c.take("insert.mode").as_deref() {
        None | Some("upsert") | Some("update") => lines.push("mode = \"replica\"".into()),
        Some("insert") => {
            lines.push("mode = \"changelog\"".into());
            c.todo.push((
                "insert.mode".into(),
                "\"insert\" appends every record: mapped to mode = \"changelog\" (one row per change); use \
                 \"replica\" for the current state"
                    .into(),
            ));
        }
        Some(other) => c.todo.push(("insert.mode".into(), format!("{other:?} is not a JDBC sink mode"))),
    }
    let evolve =
        c.take("auto.evolve").map(|v| v == "true").or_else(|| c.take("schema.evolution").map(|v| v == "basic"));
    match evolve {
        Some(true) => lines.push("schema_changes = \"follow\"".into()),
        Some(false) => lines.push("schema_changes = \"freeze\"".into()),
        None => {}
    }
    if let Some(n) = c.take("batch.size").filter(|n| n.parse::<u64>().is_ok()) {
        lines.push(format!("batch = {{ max_rows = {n} }}"));
    }
    for k in ["pk.mode", "pk.fields", "primary.key.mode", "primary.key.fields"] {
        c.skip(k, "replica tables take the source table's key");
    }
    c.skip("delete.enabled", "a replica applies deletes");
    c.skip("auto.create", "Sluice creates the tables");
    match c.take("table.name.format").as_deref() {
        None | Some("${topic}") | Some("${source.table}") => {}
        Some(other) => c.todo.push((
            "table.name.format".into(),
            format!(
                "{other:?}: tables are named after the source table (a Kafka source's `table` template renames them)"
            ),
        )),
    }
    Ok(lines)
}

/// A Kafka source reading the sinks' topics with their converters.
fn kafka_source(connectors: &mut [Connector], env: &mut Vec<String>) -> Lines {
    let mut topics: Vec<String> = Vec::new();
    let mut format = None;
    let mut registry = None;
    let mut brokers = None;
    let mut dlq = None;
    for c in connectors.iter_mut() {
        if let Some(t) = c.take("topics") {
            topics.extend(t.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()));
        }
        if let Some(r) = c.take("topics.regex") {
            topics.push(format!("^{r}"));
        }
        brokers =
            brokers.or_else(|| c.take("consumer.override.bootstrap.servers").or_else(|| c.take("bootstrap.servers")));
        let unwrap = c
            .props
            .iter()
            .any(|(k, v)| k.starts_with("transforms.") && k.ends_with(".type") && v.contains("ExtractNewRecordState"));
        let value = c.take("value.converter").unwrap_or_default();
        let f = if value.contains("Avro") {
            if value.contains("WithoutSchemaRegistry") {
                c.todo.push((
                    "value.converter".into(),
                    "Avro without a Schema Registry is not read: Sluice reads the Confluent wire format".into(),
                ));
            }
            "avro"
        } else if c.kind() == Kind::JdbcSink && !unwrap && c.class().contains("debezium") {
            "debezium-json"
        } else {
            "json"
        };
        format = format.or(Some(f));
        c.take("key.converter");
        for side in ["value", "key"] {
            if let Some(url) = c.take(&format!("{side}.converter.schema.registry.url")) {
                let auth = c.take(&format!("{side}.converter.basic.auth.user.info")).map(|_| {
                    env.push("SCHEMA_REGISTRY_USER_INFO".into());
                    "${SCHEMA_REGISTRY_USER_INFO}@"
                });
                c.take(&format!("{side}.converter.basic.auth.credentials.source"));
                if let (Some(a), Some((scheme, host))) = (auth, url.split_once("://")) {
                    registry = registry.or(Some(format!("{scheme}://{a}{host}")));
                } else {
                    registry = registry.or(Some(url));
                }
            }
        }
        c.skip("key.converter.", "keys are read by the source's format");
        c.skip("value.converter.schemas.enable", "the JSON formats read Kafka Connect's schema block when present");
        if unwrap {
            c.skip("transforms", "Sluice reads Debezium's envelope and ExtractNewRecordState's flat rows alike");
        }
        if let Some(t) = c.take("errors.deadletterqueue.topic.name") {
            dlq = dlq.or(Some(t));
        }
        c.skip("errors.deadletterqueue.", "the dead-letter topic gets Kafka Connect's error headers always");
        c.skip("errors.tolerance", "records that cannot be decoded go to dead_letter_topic when it is set");
        c.skip("errors.log.", "Sluice logs every dead letter");
    }
    let brokers = brokers.unwrap_or_else(|| {
        env.push("KAFKA_BROKERS".into());
        "${KAFKA_BROKERS}".into()
    });
    let mut lines = vec![
        "type = \"kafka\"".to_string(),
        format!("brokers = {}", q(&brokers)),
        format!("topics = {}", list(&topics)),
        format!("format = {}", q(format.unwrap_or("json"))),
    ];
    if let Some(r) = registry {
        lines.push(format!("schema_registry = {}", q(&r)));
    }
    if let Some(d) = dlq {
        lines.push(format!("dead_letter_topic = {}", q(&d)));
    }
    lines
}

/// A Kafka sink writing the topics Debezium would (`<topic.prefix>.<schema>.<table>`).
fn kafka_sink(c: &mut Connector, prefix: Option<&str>, env: &mut Vec<String>) -> Lines {
    let brokers = c
        .take("schema.history.internal.kafka.bootstrap.servers")
        .or_else(|| c.take("database.history.kafka.bootstrap.servers"))
        .unwrap_or_else(|| {
            env.push("KAFKA_BROKERS".into());
            "${KAFKA_BROKERS}".into()
        });
    let mut lines = vec![
        "type = \"kafka\"".to_string(),
        format!("brokers = {}", q(&brokers)),
        "format = \"debezium-json\"".to_string(),
    ];
    let json_schemas = c.props.get("value.converter.schemas.enable").is_none_or(|v| v == "true")
        && c.props.get("value.converter").is_none_or(|v| v.contains("JsonConverter"));
    if c.props.get("value.converter").is_some_and(|v| v.contains("Avro")) {
        lines[2] = "format = \"avro\"".into();
        if let Some(r) = c.take("value.converter.schema.registry.url") {
            lines.push(format!("schema_registry = {}", q(&r)));
        }
    } else if json_schemas {
        lines.push("schemas = true".into());
    }
    c.take("value.converter.schemas.enable");
    if let Some(p) = prefix {
        lines.push(format!("topic = {}", q(&format!("{p}.{{schema}}.{{table}}"))));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_files_read_as_java_does() {
        let p = properties("# c\n! c\na=1\nb : two words\nc three\nlong = x\\\n   y\nesc\\:key = a\\tb\n\nempty=\n");
        assert_eq!(p["a"], "1");
        assert_eq!(p["b"], "two words");
        assert_eq!(p["c"], "three");
        assert_eq!(p["long"], "xy");
        assert_eq!(p["esc:key"], "a\tb");
        assert_eq!(p["empty"], "");
    }

    #[test]
    fn debezium_lists_become_globs() {
        assert_eq!(
            globs("inventory\\.orders,inventory\\.cust.*", ""),
            Some(vec!["inventory.orders".into(), "inventory.cust*".into()])
        );
        assert_eq!(globs("inventory", ".*"), Some(vec!["inventory.*".into()]));
        assert_eq!(globs("inv(entory|oice)\\.x", ""), None);
        assert_eq!(pipeline_name("Snowflake-Sink.v2"), "snowflake_sink_v2");
    }
}
