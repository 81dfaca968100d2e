//! Per-key collapsing for replica sinks: the changes of a batch reduced to one net operation per
//! key, the last one winning, so a sink applies each key once with set-based statements.
//!
//! Every replica sink (PostgreSQL, MySQL, DuckDB, Snowflake) shares this. The merge rules keep
//! the cheapest operation that is still correct whatever the target held before the batch: a
//! key whose only change is an insert can be inserted plainly; a key only updated can be
//! updated (with an upsert for rows missing on the target); any other mix needs an upsert.

use std::borrow::Cow;

use rustc_hash::FxHashMap;

use crate::event::Op;
use crate::schema::{Key, Row, SchemaRef};
use crate::value::Value;

/// The net effect of a batch's changes on one key.
#[derive(Debug, Clone, PartialEq)]
pub enum NetOp {
    /// The key's only change is an insert: the target cannot hold the row yet.
    Insert(Row),
    /// The key's changes are updates of a row the target should hold.
    Update(Row),
    /// The row must end up as given, whether or not the target holds it.
    Upsert(Row),
    /// The row must not exist.
    Delete(Key),
}

impl NetOp {
    /// The row an insert, update or upsert leaves; `None` for a delete.
    pub fn row(&self) -> Option<&Row> {
        match self {
            NetOp::Insert(r) | NetOp::Update(r) | NetOp::Upsert(r) => Some(r),
            NetOp::Delete(_) => None,
        }
    }
}

/// Fills the values an update did not resend ([`Value::Unchanged`]) from the earlier row.
fn fill_unchanged(mut next: Row, prev: Row) -> Row {
    for (n, p) in next.iter_mut().zip(prev) {
        if *n == Value::Unchanged {
            *n = p;
        }
    }
    next
}

/// A key's later change merged into its earlier one.
pub fn merge(prev: Option<NetOp>, next: NetOp) -> NetOp {
    use NetOp::{Delete, Insert, Update, Upsert};
    match (prev, next) {
        // A key seen earlier in the batch may exist on the target (deleted, then inserted
        // again): only an upsert is safe.
        (Some(_), Insert(row)) => Upsert(row),
        (None, op) | (_, op @ Delete(_)) => op,
        (Some(Insert(prev)), Update(next) | Upsert(next)) => Insert(fill_unchanged(next, prev)),
        (Some(Update(prev)), Update(next)) => Update(fill_unchanged(next, prev)),
        (Some(Update(prev) | Upsert(prev)), Upsert(next) | Update(next)) => Upsert(fill_unchanged(next, prev)),
        (Some(Delete(_)), Update(next) | Upsert(next)) => Upsert(next),
    }
}

/// What [`KeyedBatch::add`] did with a change.
#[derive(Debug, PartialEq)]
pub enum Added {
    /// Buffered; `new_keys` keys were not in the batch before.
    Buffered {
        /// Keys added to the batch
        new_keys: usize,
    },
    /// An update moved the row to a new key but did not resend some values, which only the
    /// target's row under the old key holds. The sink must write out what the batch holds for
    /// this table, then move that row itself (update its key and the values that were sent).
    MoveRow {
        /// The key the row has on the target
        old_key: Key,
        /// The new row, with [`Value::Unchanged`] where the target's value stays
        row: Row,
    },
    /// The table was truncated: the batch was emptied; the sink must empty the target table
    /// after writing out what the batch held before.
    Truncate,
}

/// One table's changes in a batch, collapsed per key, in first-seen order.
#[derive(Debug)]
pub struct KeyedBatch {
    schema: SchemaRef,
    by_key: FxHashMap<Key, usize>,
    ops: Vec<Option<NetOp>>,
}

impl KeyedBatch {
    /// An empty batch for rows of `schema`.
    pub fn new(schema: SchemaRef) -> KeyedBatch {
        KeyedBatch { schema, by_key: FxHashMap::default(), ops: Vec::new() }
    }

    /// The schema of the rows.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Distinct keys in the batch.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Merges `op` into what the batch holds for `key`; returns whether the key is new.
    pub fn put(&mut self, key: Key, op: NetOp) -> bool {
        match self.by_key.get(&key) {
            Some(&i) => {
                let merged = merge(self.ops[i].take(), op);
                self.ops[i] = Some(merged);
                false
            }
            None => {
                self.by_key.insert(key, self.ops.len());
                self.ops.push(Some(op));
                true
            }
        }
    }

    /// Adds a copied row (from a copy of a live table): it replaces whatever the key holds.
    pub fn add_copied(&mut self, row: Row) -> bool {
        let key = self.schema.key_of(&row);
        self.put(key, NetOp::Upsert(row))
    }

    /// Adds one change of this table. An owned change gives up its rows; a borrowed one is
    /// copied.
    pub fn add(&mut self, op: Cow<'_, Op>) -> Added {
        let schema = self.schema.clone();
        let key_of = |r: &Row| schema.key_of(r);
        let complete = |k: &Key| k.iter().all(|v| !matches!(v, Value::Null | Value::Unchanged));
        // The row an operation leaves, taken from the change.
        let after = |op: Cow<'_, Op>| -> Row {
            match op.into_owned() {
                Op::Insert { after } | Op::Update { after, .. } => after,
                _ => Row::new(),
            }
        };
        let new_keys = match &*op {
            Op::Truncate => {
                self.by_key.clear();
                self.ops.clear();
                return Added::Truncate;
            }
            Op::Insert { after: a } => {
                let key = key_of(a);
                usize::from(self.put(key, NetOp::Insert(after(op))))
            }
            Op::Delete { before } => {
                let key = key_of(before);
                usize::from(self.put(key.clone(), NetOp::Delete(key)))
            }
            Op::Update { before, after: a } => {
                let new_key = key_of(a);
                let old_key = before.as_ref().map(&key_of).filter(|k| complete(k) && *k != new_key);
                let partial = a.contains(&Value::Unchanged);
                match old_key {
                    Some(old) if partial => return Added::MoveRow { old_key: old, row: after(op) },
                    Some(old) => {
                        let x = self.put(old.clone(), NetOp::Delete(old));
                        let y = self.put(new_key, NetOp::Upsert(after(op)));
                        usize::from(x) + usize::from(y)
                    }
                    None => usize::from(self.put(new_key, NetOp::Update(after(op)))),
                }
            }
        };
        Added::Buffered { new_keys }
    }

    /// The net operations, one per key, in first-seen order.
    pub fn into_ops(self) -> Vec<NetOp> {
        self.ops.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ColumnSchema, DataType, TableId, TableSchema};
    use std::sync::Arc;

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn merges_a_keys_changes_into_the_cheapest_safe_operation() {
        use NetOp::{Delete, Insert, Update, Upsert};
        let kind = |op: &NetOp| match op {
            Insert(r) => ("insert", r.clone()),
            Update(r) => ("update", r.clone()),
            Upsert(r) => ("upsert", r.clone()),
            Delete(_) => ("delete", Vec::new()),
        };
        let old = vec![t("1"), t("a"), t("toast")];
        let new = vec![t("1"), t("b"), Value::Unchanged];
        let filled = vec![t("1"), t("b"), t("toast")];
        assert_eq!(kind(&merge(Some(Insert(old.clone())), Update(new.clone()))), ("insert", filled.clone()));
        assert_eq!(kind(&merge(Some(Update(old.clone())), Update(new.clone()))), ("update", filled.clone()));
        assert_eq!(kind(&merge(Some(Upsert(old.clone())), Update(new.clone()))), ("upsert", filled.clone()));
        assert_eq!(kind(&merge(Some(Update(old.clone())), Upsert(new.clone()))), ("upsert", filled));
        assert_eq!(kind(&merge(Some(Delete(Vec::new())), Insert(old.clone()))).0, "upsert");
        assert_eq!(kind(&merge(Some(Delete(Vec::new())), Update(old.clone()))).0, "upsert");
        assert_eq!(kind(&merge(Some(Insert(old.clone())), Delete(Vec::new()))).0, "delete");
        assert_eq!(kind(&merge(None, Update(old))).0, "update");
    }

    #[test]
    fn a_batch_keeps_one_operation_per_key_in_first_seen_order() {
        let schema = Arc::new(TableSchema {
            id: TableId::new("s", "t"),
            columns: vec![
                ColumnSchema::new("id", DataType::Int64, "bigint").key(),
                ColumnSchema::new("v", DataType::Text, "text"),
            ],
            version: 1,
            dialect: "test".into(),
        });
        let row = |k: i64, v: &str| vec![Value::Int(k), t(v)];
        let mut b = KeyedBatch::new(schema);
        assert_eq!(b.add(Cow::Owned(Op::Insert { after: row(1, "a") })), Added::Buffered { new_keys: 1 });
        assert_eq!(b.add(Cow::Owned(Op::Insert { after: row(2, "b") })), Added::Buffered { new_keys: 1 });
        assert_eq!(
            b.add(Cow::Owned(Op::Update { before: None, after: row(1, "a2") })),
            Added::Buffered { new_keys: 0 }
        );
        // A key change becomes a delete of the old key and an upsert of the new one.
        let moved = Op::Update { before: Some(vec![Value::Int(2), Value::Null]), after: row(3, "b") };
        assert_eq!(b.add(Cow::Borrowed(&moved)), Added::Buffered { new_keys: 1 });
        // ...unless values were not resent: then the sink moves the row itself.
        let partial =
            Op::Update { before: Some(vec![Value::Int(3), Value::Null]), after: vec![Value::Int(4), Value::Unchanged] };
        assert!(matches!(b.add(Cow::Borrowed(&partial)), Added::MoveRow { .. }));
        assert_eq!(b.len(), 3);
        assert_eq!(
            b.into_ops(),
            vec![NetOp::Insert(row(1, "a2")), NetOp::Delete(vec![Value::Int(2)]), NetOp::Upsert(row(3, "b"))]
        );
    }
}
