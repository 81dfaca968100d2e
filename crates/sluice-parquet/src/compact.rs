//! Small-file compaction: a partition's small files, written by one sink, merged into one file
//! per table shape.
//!
//! `compact.json` (in the sink's state folder) names the merged file and its inputs before
//! anything changes: the merged file is written (visible only when complete), then the inputs
//! are removed, then `compact.json`. Opening the sink finishes a merge a crash cut short: when
//! the merged file is there the inputs go, otherwise nothing changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use tracing::{debug, info};

use crate::config::CompactionConfig;
use crate::sink::{fnv, put, store_err, ParquetError};

/// What `compact.json` holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Merge {
    output: String,
    inputs: Vec<String>,
}

fn compact_json(state: &Path) -> Path {
    state.clone().join("compact.json")
}

/// Finishes a merge a crash cut short (see the module's comment).
pub async fn recover(store: &Arc<dyn ObjectStore>, state: &Path) -> Result<(), ParquetError> {
    let at = compact_json(state);
    let bytes = match store.get(&at).await {
        Ok(r) => r.bytes().await.map_err(store_err("read compact.json"))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(store_err("read compact.json")(e)),
    };
    if let Ok(m) = serde_json::from_slice::<Merge>(&bytes) {
        match store.head(&Path::from(m.output.as_str())).await {
            Ok(_) => {
                remove_all(store, m.inputs.iter().map(|p| Path::from(p.as_str())).collect()).await?;
                info!(output = %m.output, inputs = m.inputs.len(), "finished a compaction a crash had cut short");
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store_err(format!("look for {}", m.output))(e)),
        }
    }
    remove_all(store, vec![at]).await
}

async fn remove_all(store: &Arc<dyn ObjectStore>, paths: Vec<Path>) -> Result<(), ParquetError> {
    for p in paths {
        match store.delete(&p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store_err(format!("remove {p}"))(e)),
        }
    }
    Ok(())
}

/// Merges the small files of `partition` that `owner` (`<pipeline>-<sink>`) wrote, when there
/// are enough of them. Returns how many files were merged.
pub async fn partition(
    store: &Arc<dyn ObjectStore>,
    state: &Path,
    partition: &Path,
    owner: &str,
    cfg: &CompactionConfig,
    props: &WriterProperties,
) -> Result<usize, ParquetError> {
    let small = cfg.target_bytes as u64 / 2;
    let ours = [format!("part-{owner}-"), format!("compact-{owner}-")];
    let mut files: Vec<_> = store
        .list(Some(partition))
        .try_filter(|m| {
            let name = m.location.filename().unwrap_or_default();
            let keep =
                m.size < small && name.ends_with(".parquet") && ours.iter().any(|p| name.starts_with(p.as_str()));
            std::future::ready(keep)
        })
        .try_collect()
        .await
        .map_err(store_err(format!("list {partition}")))?;
    if files.len() < cfg.min_files {
        return Ok(0);
    }
    files.sort_by(|a, b| a.location.cmp(&b.location));
    // As many as fit in one merged file.
    let mut total = 0u64;
    files.retain(|m| {
        total += m.size;
        total <= cfg.target_bytes as u64
    });
    // Inputs by table shape: one merged file per shape.
    let mut shapes: BTreeMap<String, Vec<(Path, Bytes)>> = BTreeMap::new();
    for m in files {
        let bytes = store
            .get(&m.location)
            .await
            .map_err(store_err(format!("read {}", m.location)))?
            .bytes()
            .await
            .map_err(store_err(format!("read {}", m.location)))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
            .map_err(|e| ParquetError::Fatal(format!("{}: {e}", m.location)))?;
        shapes.entry(format!("{:?}", builder.schema())).or_default().push((m.location, bytes));
    }
    let mut merged = 0;
    for (_, inputs) in shapes.into_iter().filter(|(_, v)| v.len() >= 2) {
        let names: Vec<String> = inputs.iter().map(|(p, _)| p.to_string()).collect();
        let output = partition.clone().join(format!("compact-{owner}-h{:016x}.parquet", fnv(&names.join("\n"))));
        let mut writer: Option<ArrowWriter<Vec<u8>>> = None;
        for (path, bytes) in &inputs {
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
                .and_then(|b| b.build())
                .map_err(|e| ParquetError::Fatal(format!("{path}: {e}")))?;
            for batch in reader {
                let batch = batch.map_err(|e| ParquetError::Fatal(format!("{path}: {e}")))?;
                let w = match &mut writer {
                    Some(w) => w,
                    None => writer.insert(
                        ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props.clone()))
                            .map_err(|e| ParquetError::Fatal(format!("{output}: {e}")))?,
                    ),
                };
                w.write(&batch).map_err(|e| ParquetError::Fatal(format!("{output}: {e}")))?;
            }
        }
        let Some(w) = writer else { continue };
        let body = w.into_inner().map_err(|e| ParquetError::Fatal(format!("{output}: {e}")))?;
        let plan = Merge { output: output.to_string(), inputs: names };
        put(store, &compact_json(state), Bytes::from(serde_json::to_vec(&plan).unwrap_or_default())).await?;
        put(store, &output, Bytes::from(body)).await?;
        sluice_core::crash_point("sink.mid_compaction");
        remove_all(store, inputs.iter().map(|(p, _)| p.clone()).collect()).await?;
        remove_all(store, vec![compact_json(state)]).await?;
        debug!(%output, files = inputs.len(), "compacted");
        merged += inputs.len();
    }
    Ok(merged)
}
