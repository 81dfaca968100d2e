//! A statement's answer as rows of text: Snowflake sends a JSON `rowset` (values already text)
//! or an Arrow IPC stream in `rowsetBase64` (`queryResultFormat: "arrow"`), which is read here and
//! each value rendered as text. Large answers come in `chunks` fetched apart; the sink's own
//! statements never ask for one, so a chunked answer is refused, saying so.

use base64::Engine;
use serde_json::Value as J;

use crate::client::QueryResult;

/// The rows of a query answer's `data`.
pub(crate) fn read(data: &J) -> Result<QueryResult, String> {
    let columns: Vec<String> = data["rowtype"]
        .as_array()
        .map(|cols| cols.iter().map(|c| c["name"].as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default();
    if data["chunks"].as_array().is_some_and(|c| !c.is_empty()) {
        return Err("an answer in chunks, which Sluice's statements do not expect".into());
    }
    let query_id = data["queryId"].as_str().unwrap_or_default().to_string();
    let rows = match data["queryResultFormat"].as_str() {
        Some("arrow") => arrow_rows(data["rowsetBase64"].as_str().unwrap_or_default())?,
        _ => data["rowset"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        r.as_array()
                            .map(|vals| {
                                vals.iter()
                                    .map(|v| match v {
                                        J::Null => None,
                                        J::String(s) => Some(s.clone()),
                                        other => Some(other.to_string()),
                                    })
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    Ok(QueryResult { query_id, columns, rows })
}

/// The rows of a base64 Arrow IPC stream, values as Arrow's text of them.
fn arrow_rows(b64: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    if b64.is_empty() {
        return Ok(Vec::new());
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| format!("rowsetBase64: {e}"))?;
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| format!("the Arrow answer: {e}"))?;
    let options = arrow_cast::display::FormatOptions::default();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| format!("the Arrow answer: {e}"))?;
        let formatters = batch
            .columns()
            .iter()
            .map(|c| arrow_cast::display::ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the Arrow answer: {e}"))?;
        for i in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(c, f)| (!c.is_null(i)).then(|| f.value(i).to_string()))
                    .collect(),
            );
        }
    }
    Ok(rows)
}
