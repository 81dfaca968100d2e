//! Table copy progress on the terminal (bars) or in the log (a line every few seconds), drawn
//! from the pipeline's published status.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use sluice_runtime::{CopyState, PipelineHandle, TableStatus};
use tracing::info;

/// How often copy progress is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Shows copy progress until the pipeline ends.
pub async fn render(mut handle: PipelineHandle) {
    if std::io::stderr().is_terminal() {
        bars(handle).await
    } else {
        let mut last = Instant::now();
        while let Some(status) = handle.changed().await {
            if last.elapsed() < LOG_EVERY {
                continue;
            }
            last = Instant::now();
            for t in status.tables.iter().filter(|t| t.state == CopyState::Copying) {
                info!(table = %t.table, rows = t.copied_rows, estimated = ?t.estimated_rows, "copy in progress");
            }
        }
    }
}

async fn bars(mut handle: PipelineHandle) {
    let multi = indicatif::MultiProgress::new();
    let known = indicatif::ProgressStyle::with_template(
        "{prefix:>24} [{bar:30}] {human_pos}/{human_len} rows  {per_sec:0}  ETA {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    // A table never analyzed has no estimate: no bar or ETA, only the count and rate.
    let unknown = indicatif::ProgressStyle::with_template("{prefix:>24} {spinner} {human_pos} rows  {per_sec:0}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
    let mut shown: HashMap<String, indicatif::ProgressBar> = HashMap::new();
    let mut update = |t: &TableStatus| {
        let bar = shown.entry(t.table.clone()).or_insert_with(|| {
            let b = match t.estimated_rows {
                Some(n) => {
                    let b = multi.add(indicatif::ProgressBar::new(n));
                    b.set_style(known.clone());
                    b
                }
                None => {
                    let b = multi.add(indicatif::ProgressBar::new_spinner());
                    b.set_style(unknown.clone());
                    b
                }
            };
            b.set_prefix(t.table.clone());
            b
        });
        if bar.length().is_some_and(|l| l > 0 && t.copied_rows > l) {
            bar.set_length(t.copied_rows);
        }
        bar.set_position(t.copied_rows);
        if t.state == CopyState::Copied && !bar.is_finished() {
            if bar.length().is_some() {
                bar.set_length(t.copied_rows);
            }
            bar.finish();
        }
    };
    while let Some(status) = handle.changed().await {
        for t in status.tables.iter().filter(|t| t.state != CopyState::Waiting) {
            update(t);
        }
    }
}
