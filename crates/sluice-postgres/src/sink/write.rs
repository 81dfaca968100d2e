//! Writing one table's net operations inside an open target transaction, with refused changes
//! isolated into the dead-letter table. Used by the sink directly and by its background commits.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sluice_core::collapse::NetOp;
use sluice_core::json::{row_json, value_json};
use sluice_core::{ConnectorError, ErrorClass, SinkStats, TableSchema};
use tokio_postgres::{Client, Statement};
use tracing::{debug, warn};

use super::apply::{Planner, Sorted};
use super::target::Target;
use crate::error::{Ctx, PgError};

/// Where refused changes go.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetters {
    /// The dead-letter table, qualified
    pub table: String,
    pub pipeline: String,
    pub sink: String,
    pub stats: Arc<SinkStats>,
}

/// Writes through one connection, preparing statements into `statements`.
pub(crate) struct Writer<'a> {
    pub client: &'a Client,
    pub statements: &'a mut HashMap<String, Statement>,
    pub dead: &'a DeadLetters,
    /// The source position shown with dead letters
    pub position: Option<String>,
    pub encoding: crate::config::Encoding,
}

impl Writer<'_> {
    /// Applies one table's net operations, isolating changes the target refuses.
    pub async fn write_ops(&mut self, schema: &TableSchema, target: &Target, ops: Vec<NetOp>) -> Result<(), PgError> {
        let n = ops.len();
        self.client.batch_execute("SAVEPOINT sluice_write").await.ctx("savepoint")?;
        let planned = Planner::new(self.client, self.statements, self.encoding).plan(schema, target, ops).await;
        let (steps, sorted) = match planned {
            Ok(p) => p,
            Err(e) => return Err(e),
        };
        if let Err(e) = self.execute(&steps).await {
            if e.class() != ErrorClass::Definite {
                return Err(e);
            }
            self.refused(schema, target, &sorted).await?;
        }
        self.client.batch_execute("RELEASE SAVEPOINT sluice_write").await.ctx("release savepoint")?;
        debug!(table = %schema.id, rows = n, "wrote batch");
        Ok(())
    }

    async fn execute(&self, steps: &[super::apply::Step]) -> Result<(), PgError> {
        for step in steps {
            step.execute(self.client).await?;
        }
        Ok(())
    }

    /// After the target refused a batch (inside savepoint `sluice_write`): applies it again with
    /// upserts for the plain inserts, then, if still refused, one change at a time.
    pub async fn refused(&mut self, schema: &TableSchema, target: &Target, sorted: &Sorted) -> Result<(), PgError> {
        self.client.batch_execute("ROLLBACK TO SAVEPOINT sluice_write").await.ctx("rollback to savepoint")?;
        let ops = sorted.ops();
        if let Err(e) = self.apply(schema, target, &ops).await {
            if e.class() != ErrorClass::Definite {
                return Err(e);
            }
            self.one_by_one(schema, target, &ops, e).await?;
        }
        Ok(())
    }

    async fn apply(&mut self, schema: &TableSchema, target: &Target, ops: &[NetOp]) -> Result<(), PgError> {
        let (steps, _) =
            Planner::new(self.client, self.statements, self.encoding).plan(schema, target, ops.to_vec()).await?;
        self.execute(&steps).await
    }

    /// A record the target refuses (a constraint, a value out of range): find it by applying
    /// one change at a time, park it in the dead-letter table, keep the rest.
    async fn one_by_one(
        &mut self,
        schema: &TableSchema,
        target: &Target,
        ops: &[NetOp],
        e: PgError,
    ) -> Result<(), PgError> {
        warn!(table = %schema.id, error = %ConnectorError::from(e), "batch refused by the target; retrying row by row");
        self.client.batch_execute("ROLLBACK TO SAVEPOINT sluice_write").await.ctx("rollback to savepoint")?;
        for op in ops {
            self.client.batch_execute("SAVEPOINT sluice_row").await.ctx("savepoint")?;
            match self.apply(schema, target, std::slice::from_ref(op)).await {
                Ok(()) => {}
                Err(e) if e.class() == ErrorClass::Definite => {
                    self.client.batch_execute("ROLLBACK TO SAVEPOINT sluice_row").await.ctx("rollback to savepoint")?;
                    self.dead_letter(schema, op, ConnectorError::from(e).to_string()).await?;
                }
                Err(e) => return Err(e),
            }
            self.client.batch_execute("RELEASE SAVEPOINT sluice_row").await.ctx("release savepoint")?;
        }
        Ok(())
    }

    /// Stores a change the target refused, in the same transaction as everything else.
    async fn dead_letter(&mut self, schema: &TableSchema, op: &NetOp, error: String) -> Result<(), PgError> {
        let (kind, row) = match op {
            NetOp::Upsert(r) | NetOp::Insert(r) | NetOp::Update(r) => ("upsert", row_json(schema, r)),
            NetOp::Delete(k) => {
                let keys = schema.columns.iter().filter(|c| c.key).map(|c| c.name.clone());
                ("delete", serde_json::Value::Object(keys.zip(k.iter().map(value_json)).collect()))
            }
        };
        warn!(table = %schema.id, op = kind, error = %error, "change sent to the dead-letter table");
        let row = row.to_string();
        let source_table = schema.id.to_string();
        self.client
            .execute(
                &format!(
                    "INSERT INTO {} (pipeline, sink, source_table, op, row, error, position) \
                     VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7)",
                    self.dead.table
                ),
                &[&self.dead.pipeline, &self.dead.sink, &source_table, &kind, &row, &error, &self.position],
            )
            .await
            .ctx("write dead letter")?;
        self.dead.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
