//! What a sink stores, atomically with the data it covers, to resume exactly where it stopped.
//!
//! A checkpoint holds the stream [`Position`] the sink has reached, the copy state of every
//! table (copied, or being copied up to some key), and the transform's state at that position.
//! Sinks store it as an opaque, versioned JSON document ([`Checkpoint::to_json`]); the first
//! release stored only a position and a "snapshot done" flag, which [`Checkpoint::from_v1`]
//! reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::position::Position;
use crate::schema::{Key, TableId};

/// Version of the JSON form written by [`Checkpoint::to_json`].
pub const CHECKPOINT_VERSION: u32 = 2;

/// How far a sink has copied one table's existing rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TableProgress {
    /// Being copied: every row with a key up to and including `after` is in the sink (none yet
    /// when `after` is `None`). Changes streamed since the copy began are applied as they come.
    Copying {
        /// Last key copied, in the source's key order
        after: Option<Key>,
    },
    /// Every row is in the sink; only streamed changes remain.
    Copied,
}

/// A sink's durable progress.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checkpoint {
    /// Every source transaction this position covers (see [`Position::covers`]) is in the sink.
    /// `None` before the sink received anything.
    pub position: Option<Position>,
    /// Copy state per table. A selected table that is absent has not been copied at all.
    pub tables: BTreeMap<TableId, TableProgress>,
    /// The source's identity of each table in `tables` when its copy began (PostgreSQL: the
    /// table's OID), where the source gives one. A table found under the same name with
    /// another identity was dropped and created again: it is copied again.
    pub table_ids: BTreeMap<TableId, String>,
    /// Read from a first-release checkpoint whose snapshot had finished: every table selected
    /// at that time counts as copied (that release did not record which tables it copied).
    pub all_tables_copied: bool,
    /// State of the transform stage at `position`, if it keeps any.
    pub transform: Option<serde_json::Value>,
}

/// A stored checkpoint that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Not the JSON this release writes.
    #[error("unreadable checkpoint: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Written by a newer release.
    #[error(
        "checkpoint version {found} is newer than this release understands ({CHECKPOINT_VERSION}); upgrade Sluice"
    )]
    TooNew {
        /// Version found
        found: u32,
    },
}

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    position: Option<Position>,
    #[serde(default)]
    tables: Vec<StoredTable>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    all_tables_copied: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    transform: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct StoredTable {
    schema: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_id: Option<String>,
    #[serde(flatten)]
    progress: TableProgress,
}

/// A commit refused because another process of the pipeline moved a partition this one
/// wrote past where this process last knew it (see [`Checkpoint::merge_shared`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{topic} partition {partition} is stored at offset {stored} in the target, past this process's {known}: another \
     process of this pipeline took the partition over and applied it. This commit is dropped and the sink restarts \
     from the stored offsets"
)]
pub struct Overtaken {
    /// The topic
    pub topic: String,
    /// The partition
    pub partition: i32,
    /// Its next offset in the stored checkpoint
    pub stored: i64,
    /// Its next offset as this process knew it before the commit (`none` if it never had one)
    pub known: String,
}

impl Checkpoint {
    /// The checkpoint to store for a commit of a sink that several processes write side by
    /// side, each owning some of a Kafka source's partitions. `self` is this process's
    /// checkpoint, `stored` the one in the target (read under a row lock), `known` this
    /// process's position before the commit (what it opened with or last stored).
    ///
    /// The commit covers the partitions whose offset moved since `known`. If the stored offset
    /// of any of them is past `known`, another process applied that partition meanwhile (it was
    /// moved by a rebalance): the commit is refused, so nothing is applied twice. Otherwise every
    /// partition keeps the greater offset, so no process moves another's partitions backwards.
    /// Table progress is the union; the transform state is this process's. Positions other than
    /// Kafka offsets are not shared: `self` is stored as it is.
    pub fn merge_shared(&self, stored: &Checkpoint, known: Option<&Position>) -> Result<Checkpoint, Overtaken> {
        let (Some(Position::Kafka(mine)), Some(Position::Kafka(theirs))) = (&self.position, &stored.position) else {
            return Ok(self.clone());
        };
        let known = match known {
            Some(Position::Kafka(k)) => Some(k),
            _ => None,
        };
        for (topic, parts) in &mine.0 {
            for (&partition, &next) in parts {
                let before = known.and_then(|k| k.get(topic, partition));
                if before == Some(next) {
                    continue; // not written by this commit
                }
                if let Some(s) = theirs.get(topic, partition) {
                    if before.is_none_or(|b| s > b) {
                        return Err(Overtaken {
                            topic: topic.clone(),
                            partition,
                            stored: s,
                            known: before.map_or_else(|| "none".to_string(), |b| b.to_string()),
                        });
                    }
                }
            }
        }
        let mut out = self.clone();
        let mut position = stored.position.clone().expect("matched above");
        position.advance(self.position.as_ref().expect("matched above"));
        out.position = Some(position);
        for (t, p) in &stored.tables {
            out.tables.entry(t.clone()).or_insert_with(|| p.clone());
        }
        for (t, id) in &stored.table_ids {
            out.table_ids.entry(t.clone()).or_insert_with(|| id.clone());
        }
        out.all_tables_copied |= stored.all_tables_copied;
        Ok(out)
    }

    /// Whether `table` is fully copied in this sink.
    pub fn is_copied(&self, table: &TableId) -> bool {
        self.all_tables_copied || matches!(self.tables.get(table), Some(TableProgress::Copied))
    }

    /// Whether the copy state of `table` belongs to another table of the same name (its source
    /// identity is known and differs from `current`).
    pub fn is_other_table(&self, table: &TableId, current: Option<&str>) -> bool {
        match (self.table_ids.get(table), current) {
            (Some(held), Some(now)) => held != now,
            _ => false,
        }
    }

    /// Whether `other` holds what this one does except perhaps the position: the same tables,
    /// copy progress and transform state. A sink whose next checkpoint differs from the stored
    /// one only in position (heartbeats) may store it lazily.
    pub fn same_but_position(&self, other: &Checkpoint) -> bool {
        self.tables == other.tables
            && self.table_ids == other.table_ids
            && self.transform == other.transform
            && self.all_tables_copied == other.all_tables_copied
    }

    /// Whether the sink holds anything at all: a position or a copied table.
    pub fn is_empty(&self) -> bool {
        self.position.is_none() && self.tables.is_empty() && !self.all_tables_copied
    }

    /// The versioned JSON form sinks store.
    pub fn to_json(&self) -> String {
        let stored = Stored {
            version: CHECKPOINT_VERSION,
            position: self.position.clone(),
            tables: self
                .tables
                .iter()
                .map(|(id, p)| StoredTable {
                    schema: id.schema.clone(),
                    name: id.name.clone(),
                    source_id: self.table_ids.get(id).cloned(),
                    progress: p.clone(),
                })
                .collect(),
            all_tables_copied: self.all_tables_copied,
            transform: self.transform.clone(),
        };
        // Serializing plain data into a String cannot fail.
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Reads what [`Checkpoint::to_json`] wrote, in this or an earlier version.
    pub fn from_json(s: &str) -> Result<Checkpoint, CheckpointError> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let v: Version = serde_json::from_str(s)?;
        if v.version > CHECKPOINT_VERSION {
            return Err(CheckpointError::TooNew { found: v.version });
        }
        let stored: Stored = serde_json::from_str(s)?;
        let mut cp = Checkpoint {
            position: stored.position,
            all_tables_copied: stored.all_tables_copied,
            transform: stored.transform,
            ..Checkpoint::default()
        };
        for t in stored.tables {
            let id = TableId::new(t.schema, t.name);
            if let Some(s) = t.source_id {
                cp.table_ids.insert(id.clone(), s);
            }
            cp.tables.insert(id, t.progress);
        }
        Ok(cp)
    }

    /// Reads a first-release checkpoint: a position in its JSON form and whether the initial
    /// snapshot had finished.
    pub fn from_v1(position: Option<&str>, snapshot_done: bool) -> Result<Checkpoint, CheckpointError> {
        let position = position.map(serde_json::from_str::<Position>).transpose()?;
        // Before its snapshot finished, the first release had streamed nothing: its position
        // then only named where the snapshot was to end, which a fresh start redoes anyway.
        if !snapshot_done {
            return Ok(Checkpoint::default());
        }
        Ok(Checkpoint { position, all_tables_copied: true, ..Checkpoint::default() })
    }
}

#[cfg(test)]
mod tests {
    fn kafka(at: &[(i32, i64)]) -> Checkpoint {
        let mut k = crate::KafkaOffsets::default();
        for (p, o) in at {
            k.set("t", *p, *o);
        }
        Checkpoint { position: Some(Position::Kafka(k)), ..Default::default() }
    }

    #[test]
    fn shared_commits_keep_each_partitions_greater_offset_and_refuse_an_overtaken_one() {
        // This process owns partition 0 (known 10, now 15); another stored partition 1 at 40.
        let known = kafka(&[(0, 10), (1, 20)]).position;
        let mine = kafka(&[(0, 15), (1, 20)]);
        let merged = mine.merge_shared(&kafka(&[(0, 10), (1, 40)]), known.as_ref()).unwrap();
        assert_eq!(merged.position, kafka(&[(0, 15), (1, 40)]).position);
        // Another process applied partition 0 past 10 meanwhile: refused, naming it.
        let e = mine.merge_shared(&kafka(&[(0, 12), (1, 40)]), known.as_ref()).unwrap_err();
        assert_eq!((e.partition, e.stored, e.known.as_str()), (0, 12, "10"));
        // A partition this process never knew that another stored: refused as well.
        let e = kafka(&[(2, 5)]).merge_shared(&kafka(&[(2, 3)]), None).unwrap_err();
        assert_eq!((e.partition, e.known.as_str()), (2, "none"));
        // A partition nobody stored yet is taken as it is.
        let merged = kafka(&[(2, 5)]).merge_shared(&kafka(&[(1, 3)]), None).unwrap();
        assert_eq!(merged.position, kafka(&[(1, 3), (2, 5)]).position);
    }

    use super::*;
    use crate::value::Value;

    #[test]
    fn checkpoints_round_trip_with_table_states_and_transform_state() {
        let mut cp = Checkpoint { position: Some(Position::Pg("1/2".parse().unwrap())), ..Default::default() };
        cp.tables.insert(TableId::new("public", "a.b"), TableProgress::Copied);
        cp.tables.insert(
            TableId::new("s", "t"),
            TableProgress::Copying { after: Some(vec![Value::Int(7), Value::Text("x".into())]) },
        );
        cp.transform = Some(serde_json::json!({"window": [1, 2]}));
        cp.table_ids.insert(TableId::new("s", "t"), "16384".into());
        let j = cp.to_json();
        assert!(j.starts_with(r#"{"version":2,"#), "{j}");
        assert_eq!(Checkpoint::from_json(&j).unwrap(), cp);
        assert!(cp.is_copied(&TableId::new("public", "a.b")));
        assert!(!cp.is_copied(&TableId::new("s", "t")));
        assert!(!cp.is_empty() && Checkpoint::default().is_empty());
        assert!(j.contains(r#""source_id":"16384""#), "{j}");
        assert!(cp.is_other_table(&TableId::new("s", "t"), Some("16999")));
        assert!(!cp.is_other_table(&TableId::new("s", "t"), Some("16384")));
        assert!(!cp.is_other_table(&TableId::new("public", "a.b"), Some("1")), "no identity recorded");
    }

    #[test]
    fn first_release_checkpoints_still_load() {
        let cp = Checkpoint::from_v1(Some(r#"{"kind":"pg","at":"16/B374D848"}"#), true).unwrap();
        assert_eq!(cp.position, Some(Position::Pg("16/B374D848".parse().unwrap())));
        assert!(cp.all_tables_copied && cp.is_copied(&TableId::new("any", "table")));
        assert!(Checkpoint::from_v1(Some(r#"{"kind":"pg","at":"0/10"}"#), false).unwrap().is_empty());
        assert!(Checkpoint::from_v1(Some("{"), true).is_err());
    }

    #[test]
    fn newer_or_malformed_checkpoints_are_refused_with_a_reason() {
        let e = Checkpoint::from_json(r#"{"version":3,"position":null}"#).unwrap_err();
        assert!(e.to_string().contains("upgrade Sluice"), "{e}");
        assert!(Checkpoint::from_json(r#"{"position":null}"#).is_err());
        assert!(Checkpoint::from_json("not json").is_err());
    }

    #[test]
    fn kafka_offsets_round_trip_through_the_stored_form() {
        let mut o = crate::KafkaOffsets::default();
        o.set("shop.public.orders", 0, 42);
        o.set("shop.public.orders", 11, 7);
        let cp = Checkpoint { position: Some(Position::Kafka(o)), ..Default::default() };
        let back = Checkpoint::from_json(&cp.to_json()).expect("a Kafka position reads back");
        assert_eq!(back.position, cp.position);
    }
}
