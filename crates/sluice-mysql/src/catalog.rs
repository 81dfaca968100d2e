//! What the server says about tables: selection, columns, keys, collations, and the table
//! shapes (`TableSchema`) built from `information_schema` (snapshot) or a table map (stream).

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use sluice_config::TableFilter;
use sluice_core::{ColumnSchema, TableId, TableSchema, Text};

use crate::binlog::{ty, TableMap};
use crate::error::{Ctx, MyError};
use crate::rows::{Charset, ColumnPlan};

/// The dialect MySQL schemas carry.
pub const DIALECT: &str = "mysql";

/// Databases that are never replicated.
const SYSTEM_SCHEMAS: &[&str] = &["mysql", "information_schema", "performance_schema", "sys"];

pub use sluice_core::next_version;

/// Connects with the session settings every Sluice connection uses: UTC for TIMESTAMP values
/// and utf8mb4 results.
pub async fn connect(url: &str, what: &str) -> Result<Conn, MyError> {
    let opts = opts(url).map_err(|e| MyError::Setup(format!("{what}: invalid URL: {e}")))?;
    let opts = mysql_async::OptsBuilder::from_opts(opts)
        .init(vec!["SET time_zone = '+00:00', NAMES utf8mb4".to_string()])
        .stmt_cache_size(32);
    match Conn::new(opts).await {
        Ok(c) => Ok(c),
        Err(e) if e.to_string().to_ascii_lowercase().contains("certificate") => Err(MyError::Setup(format!(
            "connect to the {what}: the server's TLS certificate was not accepted ({e}); set ssl_ca=PATH in the URL to \
             the PEM file of the CA that signed it, and connect by the host name the certificate names \
             (verify_identity=false skips the name check, verify_ca=false every check)"
        ))),
        Err(e) => Err(MyError::Client { what: format!("connect to the {what}"), source: e }),
    }
}

/// Connection options from a `mysql://` URL. TLS: `require_ssl=true` (certificate checked
/// against the system's roots), `verify_ca=false` / `verify_identity=false` to relax the check,
/// and Sluice's own `ssl_ca=PATH` (a PEM file of the CA(s) to trust) and `ssl_cert=PATH` with
/// `ssl_key=PATH` (a client certificate chain and its private key, PEM), each implying
/// `require_ssl`.
pub fn opts(url: &str) -> Result<mysql_async::Opts, String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut ca, mut cert, mut key) = (None, None, None);
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let file = |name: &str, path: &str| {
            let p = std::path::PathBuf::from(path);
            match p.is_file() {
                true => Ok(Some(p)),
                false => Err(format!("{name}: no file at {path}")),
            }
        };
        match pair.split_once('=') {
            Some(("ssl_ca", path)) => ca = file("ssl_ca", path)?,
            Some(("ssl_cert", path)) => cert = file("ssl_cert", path)?,
            Some(("ssl_key", path)) => key = file("ssl_key", path)?,
            _ => rest.push(pair),
        }
    }
    let plain = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    let opts = mysql_async::Opts::from_url(&plain).map_err(|e| e.to_string())?;
    if ca.is_none() && cert.is_none() && key.is_none() {
        return Ok(opts);
    }
    let mut ssl = opts.ssl_opts().cloned().unwrap_or_default();
    if let Some(ca) = ca {
        ssl = ssl.with_root_certs(vec![ca.into()]);
    }
    match (cert, key) {
        (Some(c), Some(k)) => {
            ssl = ssl.with_client_identity(Some(mysql_async::ClientIdentity::new(c.into(), k.into())));
        }
        (None, None) => {}
        _ => return Err("ssl_cert and ssl_key go together: give both, or neither".into()),
    }
    Ok(mysql_async::OptsBuilder::from_opts(opts).ssl_opts(Some(ssl)).into())
}

/// Server facts a source needs.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `VERSION()`
    pub version: String,
    /// MariaDB rather than MySQL
    pub mariadb: bool,
    /// GTIDs are on (MariaDB: always; MySQL: `gtid_mode=ON`)
    pub gtid: bool,
    /// Collation id → character set
    pub collations: HashMap<u32, String>,
}

/// Reads the server's version, GTID mode and collations.
pub async fn server_info(conn: &mut Conn) -> Result<ServerInfo, MyError> {
    let version: String =
        conn.query_first("SELECT VERSION()").await.ctx("read the server version")?.unwrap_or_default();
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    let gtid = if mariadb {
        true
    } else {
        let mode: Option<String> = conn.query_first("SELECT @@GLOBAL.gtid_mode").await.unwrap_or(None);
        mode.is_some_and(|m| m.eq_ignore_ascii_case("ON"))
    };
    let rows: Vec<(u64, String)> = conn
        .query("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS WHERE ID IS NOT NULL")
        .await
        .ctx("read collations")?;
    let collations = rows.into_iter().map(|(id, cs)| (id as u32, cs)).collect();
    Ok(ServerInfo { version, mariadb, gtid, collations })
}

/// Parses a GTID set as the server prints it; empty means none yet (in the server's flavour).
pub fn gtid_set(text: &str, mariadb: bool) -> Result<sluice_core::GtidSet, MyError> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if text.is_empty() {
        return Ok(if mariadb {
            sluice_core::GtidSet::MariaDb(Default::default())
        } else {
            sluice_core::GtidSet::MySql(Default::default())
        });
    }
    text.parse().map_err(|e| MyError::Protocol(format!("GTID set {text:?}: {e}")))
}

/// A selected table.
#[derive(Debug, Clone)]
pub struct SourceTable {
    /// `database.table`
    pub id: TableId,
    /// Estimated rows (`information_schema.TABLES.TABLE_ROWS`)
    pub estimated_rows: u64,
}

/// Base tables matching the filter, in name order.
pub async fn selected_tables(conn: &mut Conn, filter: &TableFilter) -> Result<Vec<SourceTable>, MyError> {
    let rows: Vec<(String, String, Option<u64>)> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME",
        )
        .await
        .ctx("list tables")?;
    Ok(rows
        .into_iter()
        .filter(|(s, t, _)| !SYSTEM_SCHEMAS.contains(&s.as_str()) && filter.selects(s, t))
        .map(|(s, t, n)| SourceTable { id: TableId::new(s, t), estimated_rows: n.unwrap_or(0) })
        .collect())
}

/// A column as `information_schema.COLUMNS` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoColumn {
    /// Name
    pub name: String,
    /// `DATA_TYPE`, lower case (`int`, `varchar`, ...)
    pub data_type: String,
    /// `COLUMN_TYPE` (`int(10) unsigned`, `enum('a','b')`, ...)
    pub column_type: String,
    /// Nullable
    pub nullable: bool,
    /// Character set, for character columns
    pub charset: Option<String>,
    /// Declared length in characters (character columns) or bytes
    pub char_len: Option<u64>,
    /// Length in bytes
    pub octet_len: Option<u64>,
    /// Decimals and bit: precision; integer types: digits
    pub num_precision: Option<u64>,
    /// Decimals: scale
    pub num_scale: Option<u64>,
    /// Temporal types: fractional digits
    pub dt_precision: Option<u64>,
    /// A MariaDB JSON column (LONGTEXT checked by `json_valid`)
    pub json_text: bool,
    /// Position in the table's key (primary, or the unique index standing in for it)
    pub key_pos: Option<u32>,
}

type ColumnRow =
    (String, String, String, String, Option<String>, Option<u64>, Option<u64>, Option<u64>, Option<u64>, Option<u64>);

/// The columns of `table` in order, with its key.
pub async fn table_columns(conn: &mut Conn, table: &TableId) -> Result<Vec<InfoColumn>, MyError> {
    let rows: Vec<ColumnRow> = conn
        .exec(
            "SELECT COLUMN_NAME, LOWER(DATA_TYPE), COLUMN_TYPE, IS_NULLABLE, CHARACTER_SET_NAME, \
                    CHARACTER_MAXIMUM_LENGTH, CHARACTER_OCTET_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, \
                    DATETIME_PRECISION \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (&table.schema, &table.name),
        )
        .await
        .ctx(format!("read the columns of {table}"))?;
    let mut cols: Vec<InfoColumn> = rows
        .into_iter()
        .map(|r| InfoColumn {
            name: r.0,
            data_type: r.1,
            column_type: r.2,
            nullable: r.3 == "YES",
            charset: r.4,
            char_len: r.5,
            octet_len: r.6,
            num_precision: r.7,
            num_scale: r.8,
            dt_precision: r.9,
            json_text: false,
            key_pos: None,
        })
        .collect();
    // MariaDB's JSON is LONGTEXT with a json_valid() check named after the column.
    let checks: Vec<String> = conn
        .exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
            (&table.schema, &table.name),
        )
        .await
        .unwrap_or_default();
    for c in cols.iter_mut().filter(|c| c.data_type == "longtext") {
        let clause = format!("json_valid(`{}`)", c.name.replace('`', "``"));
        c.json_text = checks.iter().any(|k| k.eq_ignore_ascii_case(&clause));
    }
    // The primary key, else the first unique index over NOT NULL columns.
    let keys: Vec<(String, u32, String, u64)> = conn
        .exec(
            "SELECT s.INDEX_NAME, s.SEQ_IN_INDEX, s.COLUMN_NAME, s.NON_UNIQUE FROM information_schema.STATISTICS s \
             WHERE s.TABLE_SCHEMA = ? AND s.TABLE_NAME = ? ORDER BY s.INDEX_NAME = 'PRIMARY' DESC, s.INDEX_NAME, s.SEQ_IN_INDEX",
            (&table.schema, &table.name),
        )
        .await
        .ctx(format!("read the keys of {table}"))?;
    let mut by_index: Vec<(String, Vec<(u32, String)>)> = Vec::new();
    for (index, seq, col, non_unique) in keys {
        if non_unique != 0 {
            continue;
        }
        match by_index.iter_mut().find(|(i, _)| *i == index) {
            Some((_, cs)) => cs.push((seq, col)),
            None => by_index.push((index, vec![(seq, col)])),
        }
    }
    let chosen = by_index.into_iter().find(|(index, cs)| {
        index == "PRIMARY" || cs.iter().all(|(_, c)| cols.iter().any(|x| x.name == *c && !x.nullable))
    });
    if let Some((_, cs)) = chosen {
        for (seq, name) in cs {
            if let Some(c) = cols.iter_mut().find(|c| c.name == name) {
                c.key_pos = Some(seq);
            }
        }
    }
    Ok(cols)
}

/// Parses the labels of `enum('a','b''c')` / `set(...)`.
pub fn labels(column_type: &str) -> Vec<String> {
    let inner = column_type.find('(').map(|i| &column_type[i + 1..]).unwrap_or("");
    let inner = inner.strip_suffix(')').unwrap_or(inner);
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = inner.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '\'') => quoted = true,
            (true, '\'') if chars.peek() == Some(&'\'') => {
                chars.next();
                cur.push('\'');
            }
            (true, '\'') => {
                quoted = false;
                out.push(std::mem::take(&mut cur));
            }
            (true, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (true, c) => cur.push(c),
            _ => {}
        }
    }
    out
}

/// The read plan of a column described by `information_schema` (the snapshot's columns), typed
/// exactly as the same column in a table map.
pub fn plan_from_info(c: &InfoColumn) -> ColumnPlan {
    let unsigned = c.column_type.to_ascii_lowercase().contains("unsigned");
    let n = |v: Option<u64>| v.unwrap_or(0) as u16;
    let (t, meta) = match c.data_type.as_str() {
        "tinyint" => (ty::TINY, 0),
        "smallint" => (ty::SHORT, 0),
        "mediumint" => (ty::INT24, 0),
        "int" | "integer" => (ty::LONG, 0),
        "bigint" => (ty::LONGLONG, 0),
        "float" => (ty::FLOAT, 4),
        "double" | "real" => (ty::DOUBLE, 8),
        "decimal" | "numeric" => (ty::NEWDECIMAL, (n(c.num_precision) << 8) | n(c.num_scale)),
        "date" => (ty::DATE, 0),
        "datetime" => (ty::DATETIME2, n(c.dt_precision)),
        "timestamp" => (ty::TIMESTAMP2, n(c.dt_precision)),
        "time" => (ty::TIME2, n(c.dt_precision)),
        "year" => (ty::YEAR, 0),
        "bit" => {
            let bits = n(c.num_precision);
            (ty::BIT, ((bits / 8) << 8) | (bits % 8))
        }
        "char" | "binary" => (ty::STRING, n(c.octet_len)),
        "varchar" | "varbinary" => (ty::VARCHAR, n(c.octet_len)),
        "tinytext" | "tinyblob" => (ty::BLOB, 1),
        "text" | "blob" => (ty::BLOB, 2),
        "mediumtext" | "mediumblob" => (ty::BLOB, 3),
        "longtext" | "longblob" => (ty::BLOB, 4),
        "enum" => (ty::ENUM, if labels(&c.column_type).len() > 255 { 2 } else { 1 }),
        "set" => (ty::SET, labels(&c.column_type).len().div_ceil(8) as u16),
        "json" => (ty::JSON, 4),
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring" | "multipolygon"
        | "geometrycollection" | "geomcollection" => (ty::GEOMETRY, 4),
        _ => (0xff_u8.wrapping_sub(100), 0),
    };
    let charset = match &c.charset {
        Some(cs) => Charset::from_name(cs),
        None => Charset::Binary,
    };
    let labels = matches!(t, ty::ENUM | ty::SET)
        .then(|| Arc::new(labels(&c.column_type).iter().map(|s| Text::from(s.as_str())).collect::<Vec<_>>()));
    let fixed_binary = (t == ty::STRING && charset == Charset::Binary).then(|| n(c.octet_len) as usize);
    ColumnPlan { ty: t, meta, unsigned, charset, labels, json_text: c.json_text, fixed_binary }
}

/// A column's schema from its plan and, when known, its `information_schema` row.
fn column_schema(name: &str, plan: &ColumnPlan, info: Option<&InfoColumn>, nullable: bool, key: bool) -> ColumnSchema {
    let (precision, scale) = plan.precision_scale();
    let mut c = ColumnSchema::new(name, plan.data_type(), native_type(plan, info));
    c.precision = precision;
    c.scale = scale;
    // Declared length: characters for text, bytes for binary strings.
    if matches!(plan.ty, ty::STRING | ty::VARCHAR | ty::VAR_STRING) {
        let len = match (&plan.charset, info) {
            (Charset::Binary, _) => Some(plan.meta as u64),
            (_, Some(i)) => i.char_len,
            _ => None,
        };
        c.length = len.map(|l| l.min(u32::MAX as u64) as u32);
    }
    c.nullable = nullable;
    if key {
        c = c.key();
    }
    c
}

/// The source's own spelling of the type: `COLUMN_TYPE` when known, else one built from the
/// table map.
fn native_type(plan: &ColumnPlan, info: Option<&InfoColumn>) -> String {
    if let Some(i) = info {
        return if i.json_text { "json".into() } else { i.column_type.clone() };
    }
    let u = if plan.unsigned { " unsigned" } else { "" };
    match plan.ty {
        ty::TINY => format!("tinyint{u}"),
        ty::SHORT => format!("smallint{u}"),
        ty::INT24 => format!("mediumint{u}"),
        ty::LONG => format!("int{u}"),
        ty::LONGLONG => format!("bigint{u}"),
        ty::FLOAT => "float".into(),
        ty::DOUBLE => "double".into(),
        ty::NEWDECIMAL => format!("decimal({},{})", plan.meta >> 8, plan.meta & 0xff),
        ty::DATE => "date".into(),
        ty::DATETIME2 => format!("datetime({})", plan.meta),
        ty::TIMESTAMP2 => format!("timestamp({})", plan.meta),
        ty::TIME2 => format!("time({})", plan.meta),
        ty::YEAR => "year".into(),
        ty::BIT => format!("bit({})", (plan.meta >> 8) * 8 + (plan.meta & 0xff)),
        ty::JSON => "json".into(),
        ty::GEOMETRY => "geometry".into(),
        ty::ENUM | ty::SET => {
            let labels = plan
                .labels
                .as_ref()
                .map(|l| l.iter().map(|s| format!("'{}'", s.replace('\'', "''"))).collect::<Vec<_>>().join(","));
            format!("{}({})", if plan.ty == ty::ENUM { "enum" } else { "set" }, labels.unwrap_or_default())
        }
        _ if plan.charset == Charset::Binary => "longblob".into(),
        _ => "longtext".into(),
    }
}

/// The type spelling of a column known only from a table map.
fn native_type_from_map(plan: &ColumnPlan, length: Option<u32>) -> String {
    let binary = plan.charset == Charset::Binary;
    match (plan.ty, length) {
        (ty::VARCHAR | ty::VAR_STRING, Some(n)) => format!("{}({n})", if binary { "varbinary" } else { "varchar" }),
        (ty::STRING, Some(n)) => format!("{}({n})", if binary { "binary" } else { "char" }),
        (ty::BLOB, _) => {
            let size = ["tiny", "", "medium", "long"][(plan.meta.clamp(1, 4) - 1) as usize];
            format!("{size}{}", if binary { "blob" } else { "text" })
        }
        _ => native_type(plan, None),
    }
}

/// The schema of a table read from `information_schema` (snapshot), with the read plans.
pub fn schema_from_info(id: &TableId, cols: &[InfoColumn], dates_nullable: bool) -> (TableSchema, Vec<ColumnPlan>) {
    let plans: Vec<ColumnPlan> = cols.iter().map(plan_from_info).collect();
    let columns = cols
        .iter()
        .zip(&plans)
        .map(|(c, p)| {
            let nullable = c.nullable || (dates_nullable && p.is_date_like() && c.key_pos.is_none());
            column_schema(&c.name, p, Some(c), nullable, c.key_pos.is_some())
        })
        .collect();
    (TableSchema { id: id.clone(), columns, version: next_version(), dialect: DIALECT.into() }, plans)
}

/// The schema and read plans of a table as a table map describes it. `info` (the table's
/// columns now) fills in what the map lacks (nullability of keys, the key when the map has no
/// primary key metadata, MariaDB's JSON, the exact type spelling) when its columns match the
/// map's by name and type; a map from before a later DDL keeps its own shape.
pub fn schema_from_map(
    map: &TableMap,
    info: &[InfoColumn],
    collations: &HashMap<u32, String>,
    dates_nullable: bool,
) -> Result<(TableSchema, Vec<ColumnPlan>), MyError> {
    let id = TableId::new(&map.schema, &map.table);
    let names: Vec<String> = map
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| c.name.clone().or_else(|| info.get(i).map(|x| x.name.clone())))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            MyError::Setup(format!(
                "the binlog's table map of {id} carries no column names and the table's columns changed since; set \
                 binlog_row_metadata = FULL on the server (MySQL 8.0.1+, MariaDB 10.5+)"
            ))
        })?;
    let info_plans: Vec<ColumnPlan> = info.iter().map(plan_from_info).collect();
    let same = |j: usize, c: &crate::binlog::MapColumn| info_plans[j].ty == c.ty || same_family(info_plans[j].ty, c.ty);
    // With names in the map, each column finds its catalog row by name (a column added or
    // dropped since leaves the others matched); without (MySQL 5.7), only a catalog of the
    // very same shape is used.
    let with_names = map.columns.iter().all(|c| c.name.is_some());
    let positional = info.len() == map.columns.len()
        && info.iter().zip(&names).all(|(i, n)| i.name == *n)
        && map.columns.iter().enumerate().all(|(j, c)| same(j, c));
    let mut plans = Vec::with_capacity(map.columns.len());
    let mut columns = Vec::with_capacity(map.columns.len());
    for (i, c) in map.columns.iter().enumerate() {
        let j = if with_names {
            info.iter().position(|x| x.name == names[i]).filter(|&j| same(j, c))
        } else {
            positional.then_some(i)
        };
        let info_col = j.map(|j| &info[j]);
        let charset_name = c.collation.and_then(|id| collations.get(&id)).map(String::as_str);
        let charset = match c.collation {
            Some(_) => Charset::from_name(charset_name.unwrap_or("binary")),
            None => match j {
                Some(j) => info_plans[j].charset.clone(),
                None if matches!(c.ty, ty::STRING | ty::VARCHAR | ty::VAR_STRING | ty::BLOB) => {
                    return Err(MyError::Setup(format!(
                        "the binlog's table map of {id} carries no character sets; set binlog_row_metadata = FULL \
                         on the server"
                    )));
                }
                None => Charset::Binary,
            },
        };
        let mut plan = ColumnPlan::from_map(c, charset);
        if let (Some(ic), Some(j)) = (info_col, j) {
            plan.json_text = ic.json_text;
            if c.name.is_none() {
                // MySQL 5.7: no signedness either; take it from the catalog.
                plan.unsigned = info_plans[j].unsigned;
            }
            if plan.labels.is_none() {
                plan.labels = info_plans[j].labels.clone();
            }
        }
        let key = match &map.primary_key {
            Some(pk) => pk.contains(&i),
            None => info_col.is_some_and(|ic| ic.key_pos.is_some()),
        };
        let nullable = c.nullable || (dates_nullable && plan.is_date_like() && !key);
        let mut col = column_schema(&names[i], &plan, info_col, nullable, key);
        if info_col.is_none() {
            // Characters from the map's byte length.
            let per_char = match charset_name {
                Some("utf8mb4" | "utf16" | "utf32") => 4,
                Some("utf8mb3" | "utf8") => 3,
                Some("ucs2") => 2,
                _ => 1,
            };
            if matches!(plan.ty, ty::STRING | ty::VARCHAR | ty::VAR_STRING) && plan.charset != Charset::Binary {
                col.length = Some((plan.meta / per_char) as u32);
            }
            col.native_type = native_type_from_map(&plan, col.length);
        }
        columns.push(col);
        plans.push(plan);
    }
    // A key in the table map's order is the primary key's order; the schema lists key columns
    // in column order, which is what sinks use.
    Ok((TableSchema { id, columns, version: next_version(), dialect: DIALECT.into() }, plans))
}

/// Types the catalog and a table map may spell differently for the same column.
fn same_family(a: u8, b: u8) -> bool {
    let fam = |t: u8| match t {
        ty::BLOB | ty::TINY_BLOB | ty::MEDIUM_BLOB | ty::LONG_BLOB => ty::BLOB,
        ty::VARCHAR | ty::VAR_STRING => ty::VARCHAR,
        ty::DATE | ty::NEWDATE => ty::DATE,
        ty::DATETIME | ty::DATETIME2 => ty::DATETIME2,
        ty::TIMESTAMP | ty::TIMESTAMP2 => ty::TIMESTAMP2,
        ty::TIME | ty::TIME2 => ty::TIME2,
        t => t,
    };
    fam(a) == fam(b)
}

/// Backquotes an identifier.
pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `` `db`.`table` ``.
pub fn qualified(id: &TableId) -> String {
    format!("{}.{}", quote(&id.schema), quote(&id.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_labels_with_quotes() {
        assert_eq!(labels("enum('a','b''c','d,e')"), vec!["a", "b'c", "d,e"]);
        assert_eq!(labels("set('x')"), vec!["x"]);
        assert_eq!(quote("a`b"), "`a``b`");
    }
}
