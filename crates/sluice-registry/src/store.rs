//! The registry's state: schemas by id, subjects with their versions and compatibility levels,
//! kept in one JSON file that is replaced atomically after every change (write a temporary file,
//! fsync it, rename it over the old one, fsync the directory), so a crash leaves the old state or
//! the new one, never a torn file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// File name of the state inside the data directory.
pub const STATE_FILE: &str = "registry.json";

/// A compatibility level, as the Confluent Schema Registry names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    /// Parses `BACKWARD`, `full_transitive`, ...
    pub fn parse(s: &str) -> Option<Level> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase())).ok()
    }

    /// The level's name.
    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }

    fn transitive(self) -> bool {
        matches!(self, Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive)
    }
}

/// One registered schema.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSchema {
    pub id: u32,
    /// The schema as compact JSON (whitespace-insensitive identity; defaults and docs kept)
    pub schema: String,
    /// `JSON` for a JSON Schema; absent for Avro (as Confluent's API leaves it out)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_type: Option<String>,
}

/// One version of a subject.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Version {
    pub version: u32,
    pub id: u32,
    #[serde(default)]
    pub deleted: bool,
}

/// A subject: its versions in order, and its own compatibility level if set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Subject {
    pub versions: Vec<Version>,
    #[serde(default)]
    pub compatibility: Option<Level>,
}

impl Subject {
    /// Versions not deleted.
    pub fn live(&self) -> impl Iterator<Item = &Version> {
        self.versions.iter().filter(|v| !v.deleted)
    }

    /// Whether every version is deleted (a soft-deleted subject).
    pub fn deleted(&self) -> bool {
        self.versions.iter().all(|v| v.deleted)
    }
}

/// Everything the registry holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub compatibility: Level,
    pub schemas: Vec<StoredSchema>,
    pub subjects: BTreeMap<String, Subject>,
}

impl Default for State {
    fn default() -> State {
        State { compatibility: Level::Backward, schemas: Vec::new(), subjects: BTreeMap::new() }
    }
}

/// A schema accepted for registration: its compact JSON and, for Avro, its parsed form.
pub struct Candidate {
    pub text: String,
    /// The Avro schema; `None` for a JSON Schema
    pub parsed: Option<Schema>,
    /// `Some("JSON")` for a JSON Schema
    pub schema_type: Option<String>,
}

impl Candidate {
    /// Parses a schema sent by a client: Avro, or a JSON Schema (`schemaType: JSON`), which is
    /// stored as given (its compatibility is not checked).
    pub fn parse(schema: &str, schema_type: Option<&str>, has_references: bool) -> Result<Candidate, ApiError> {
        if let Some(t) = schema_type.filter(|t| t.eq_ignore_ascii_case("JSON")) {
            let json: serde_json::Value = serde_json::from_str(schema)
                .map_err(|e| ApiError::invalid_schema(format!("not a JSON Schema (not JSON): {e}")))?;
            if !json.is_object() && !json.is_boolean() {
                return Err(ApiError::invalid_schema(format!(
                    "not a JSON Schema: {t} schemas are objects or booleans"
                )));
            }
            if has_references {
                return Err(ApiError::invalid_schema(
                    "schema references are not supported by Sluice's registry: inline the referenced schemas".into(),
                ));
            }
            return Ok(Candidate { text: json.to_string(), parsed: None, schema_type: Some("JSON".into()) });
        }
        if let Some(t) = schema_type.filter(|t| !t.eq_ignore_ascii_case("AVRO")) {
            return Err(ApiError::invalid_schema(format!(
                "schema type {t} is not supported: Sluice's registry serves Avro and JSON Schema"
            )));
        }
        if has_references {
            return Err(ApiError::invalid_schema(
                "schema references are not supported by Sluice's registry: inline the referenced types".into(),
            ));
        }
        let json: serde_json::Value = serde_json::from_str(schema)
            .or_else(|_| serde_json::from_str(&format!("\"{schema}\"")))
            .map_err(|e| ApiError::invalid_schema(format!("not JSON: {e}")))?;
        let parsed =
            Schema::parse(&json).map_err(|e| ApiError::invalid_schema(format!("not a valid Avro schema: {e}")))?;
        Ok(Candidate { text: json.to_string(), parsed: Some(parsed), schema_type: None })
    }
}

/// The schema with its logical types reduced to their underlying types, for compatibility
/// checks: Avro's resolution rules are defined on the underlying types (as Java's
/// `SchemaCompatibility` applies them), and apache-avro's checker wrongly refuses identical
/// decimals inside unions.
fn base_types(text: &str) -> Option<Candidate> {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                if m.contains_key("logicalType") {
                    for k in ["logicalType", "precision", "scale"] {
                        m.remove(k);
                    }
                }
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut json: serde_json::Value = serde_json::from_str(text).ok()?;
    strip(&mut json);
    Candidate::parse(&json.to_string(), None, false).ok()
}

impl State {
    /// The schema with `id`.
    pub fn schema(&self, id: u32) -> Option<&StoredSchema> {
        self.schemas.iter().find(|s| s.id == id)
    }

    fn id_of(&self, c: &Candidate) -> Option<u32> {
        self.schemas.iter().find(|s| s.schema == c.text && s.schema_type == c.schema_type).map(|s| s.id)
    }

    /// The level that applies to `subject`.
    pub fn level(&self, subject: &str) -> Level {
        self.subjects.get(subject).and_then(|s| s.compatibility).unwrap_or(self.compatibility)
    }

    /// The subject's version whose schema is `c` (deleted ones only with `deleted`).
    pub fn lookup(&self, subject: &str, c: &Candidate, deleted: bool) -> Option<&Version> {
        let id = self.id_of(c)?;
        let s = self.subjects.get(subject)?;
        s.versions.iter().rev().find(|v| v.id == id && (deleted || !v.deleted))
    }

    /// Why `c` may not follow the subject's versions under its level (`against`: only that
    /// version, as the compatibility endpoint asks); empty when it may.
    pub fn incompatibilities(&self, subject: &str, c: &Candidate, against: Option<u32>) -> Vec<String> {
        let level = self.level(subject);
        let Some(s) = self.subjects.get(subject) else { return Vec::new() };
        let live: Vec<&Version> = s.live().collect();
        let older: Vec<&Version> = match (against, level.transitive()) {
            (Some(n), _) => live.into_iter().filter(|v| v.version == n).collect(),
            (None, true) => live,
            (None, false) => live.last().copied().into_iter().collect(),
        };
        let mut problems = Vec::new();
        if let Some(v) = older.last() {
            let old_type = self.schema(v.id).and_then(|s| s.schema_type.clone());
            if old_type != c.schema_type {
                let name = |t: &Option<String>| t.clone().unwrap_or_else(|| "AVRO".into());
                return vec![format!(
                    "version {} is a {} schema and this one a {} schema",
                    v.version,
                    name(&old_type),
                    name(&c.schema_type)
                )];
            }
        }
        if c.schema_type.is_some() {
            return problems; // JSON Schema: compatibility is not checked
        }
        let Some(new) = base_types(&c.text) else { return vec!["the schema cannot be read again".into()] };
        let c = &new;
        for v in older {
            let Some(old) = self.schema(v.id).and_then(|s| base_types(&s.schema)) else {
                continue;
            };
            let (Some(old_parsed), Some(new_parsed)) = (&old.parsed, &c.parsed) else { continue };
            let mut check = |writer: &Schema, reader: &Schema, what: &str| {
                if let Err(e) = SchemaCompatibility::can_read(writer, reader) {
                    problems.push(format!("{what} version {}: {e}", v.version));
                }
            };
            if matches!(level, Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive) {
                check(old_parsed, new_parsed, "the new schema cannot read data written with");
            }
            if matches!(level, Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive) {
                check(new_parsed, old_parsed, "data written with the new schema cannot be read by");
            }
        }
        problems
    }

    /// Registers `c` under `subject`: the existing id when the subject has it already, else a
    /// new version (reusing the schema's id when another subject registered the same schema).
    /// Returns the id and whether anything changed.
    pub fn register(&mut self, subject: &str, c: &Candidate) -> Result<(u32, bool), ApiError> {
        if let Some(v) = self.lookup(subject, c, false) {
            return Ok((v.id, false));
        }
        let problems = self.incompatibilities(subject, c, None);
        if !problems.is_empty() {
            return Err(ApiError::incompatible(format!(
                "schema being registered is incompatible with an earlier schema for subject \"{subject}\" \
                 (compatibility {}): {}",
                self.level(subject).name(),
                problems.join("; ")
            )));
        }
        let id = match self.id_of(c) {
            Some(id) => id,
            None => {
                let id = self.schemas.iter().map(|s| s.id).max().unwrap_or(0) + 1;
                self.schemas.push(StoredSchema { id, schema: c.text.clone(), schema_type: c.schema_type.clone() });
                id
            }
        };
        let s = self.subjects.entry(subject.to_string()).or_default();
        let version = s.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
        s.versions.push(Version { version, id, deleted: false });
        Ok((id, true))
    }
}

/// The state on disk in `dir`.
pub struct Storage {
    dir: PathBuf,
}

impl Storage {
    /// Opens (creating) the data directory and reads the state, empty when there is none yet.
    pub fn open(dir: &Path) -> Result<(Storage, State), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
        let path = dir.join(STATE_FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{} is not a registry state file ({e}); move it away to start with an empty registry",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok((Storage { dir: dir.to_path_buf() }, state))
    }

    /// Replaces the state on disk with `state`.
    pub fn save(&self, state: &State) -> Result<(), String> {
        use std::io::Write;
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let path = self.dir.join(STATE_FILE);
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| format!("encode the registry state: {e}"))?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &str) -> Candidate {
        Candidate::parse(&format!(r#"{{"type":"record","name":"r","fields":[{fields}]}}"#), None, false).unwrap()
    }

    #[test]
    fn backward_allows_added_fields_with_defaults_only() {
        let mut s = State::default();
        let v1 = record(r#"{"name":"a","type":"int"}"#);
        assert_eq!(s.register("t-value", &v1).unwrap(), (1, true));
        assert_eq!(s.register("t-value", &v1).unwrap(), (1, false), "same schema, same id, no new version");
        let v2 = record(r#"{"name":"a","type":"int"},{"name":"b","type":["null","string"],"default":null}"#);
        assert_eq!(s.register("t-value", &v2).unwrap(), (2, true));
        let bad = record(r#"{"name":"a","type":"int"},{"name":"c","type":"string"}"#);
        assert!(s.register("t-value", &bad).is_err(), "a new field without a default breaks BACKWARD");
        s.subjects.get_mut("t-value").unwrap().compatibility = Some(Level::None);
        assert_eq!(s.register("t-value", &bad).unwrap(), (3, true));
        // Another subject with a known schema gets its id.
        assert_eq!(s.register("u-value", &v2).unwrap(), (2, true));
    }

    #[test]
    fn identity_ignores_whitespace_but_not_defaults() {
        let a = Candidate::parse(
            r#"{ "type": "record", "name": "r", "fields": [ {"name": "a", "type": "int"} ] }"#,
            None,
            false,
        )
        .unwrap();
        let b = record(r#"{"name":"a","type":"int"}"#);
        assert_eq!(a.text, b.text);
        let c = record(r#"{"name":"a","type":"int","default":1}"#);
        assert_ne!(b.text, c.text);
        assert!(Candidate::parse("\"string\"", None, false).is_ok());
        assert!(Candidate::parse("string", None, false).is_ok(), "a bare primitive name");
        assert!(Candidate::parse("{}", None, false).is_err());
        assert!(Candidate::parse("{\"type\":\"object\"}", Some("JSON"), false).is_ok(), "JSON Schema is kept as given");
        assert!(Candidate::parse("{}", Some("PROTOBUF"), false).is_err());
    }

    #[test]
    fn levels_parse_in_any_case() {
        assert_eq!(Level::parse("full_transitive"), Some(Level::FullTransitive));
        assert_eq!(Level::Backward.name(), "BACKWARD");
        assert_eq!(Level::parse("sideways"), None);
    }
}

#[cfg(test)]
mod logical_tests {
    use super::*;

    #[test]
    fn logical_types_evolve_like_their_base_types() {
        let mut s = State::default();
        let dec = r#"{"name":"amount","type":["null",{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}],"default":null}"#;
        let ts = r#"{"name":"at","type":["null",{"type":"long","logicalType":"timestamp-micros"}],"default":null}"#;
        let v1 =
            Candidate::parse(&format!(r#"{{"type":"record","name":"r","fields":[{dec},{ts}]}}"#), None, false).unwrap();
        let v2 = Candidate::parse(
            &format!(r#"{{"type":"record","name":"r","fields":[{dec},{ts},{{"name":"note","type":["null","string"],"default":null}}]}}"#),
            None,
            false,
        )
        .unwrap();
        s.register("s", &v1).unwrap();
        assert_eq!(s.incompatibilities("s", &v2, None), Vec::<String>::new());
    }

    #[test]
    fn json_schemas_are_kept_apart_from_avro() {
        let mut state = State::default();
        let json = Candidate::parse(r#"{"type": "object"}"#, Some("JSON"), false).unwrap();
        let (id, changed) = state.register("events-value", &json).unwrap();
        assert!(changed);
        assert_eq!(state.schema(id).unwrap().schema_type.as_deref(), Some("JSON"));
        assert_eq!(state.register("events-value", &json).unwrap(), (id, false), "the same schema again");
        let avro = Candidate::parse(r#"{"type": "object"}"#, None, false);
        assert!(avro.is_err(), "not an Avro schema");
        let avro =
            Candidate::parse(r#"{"type":"record","name":"r","fields":[{"name": "a", "type": "int"}]}"#, None, false)
                .unwrap();
        let e = state.register("events-value", &avro).unwrap_err();
        assert!(format!("{e:?}").contains("JSON schema"), "{e:?}");
    }
}
