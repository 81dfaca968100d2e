use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A PostgreSQL write-ahead-log position (`pg_lsn`), printed as `X/Y` like the server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The text was not of the form `X/Y` with hexadecimal halves.
#[derive(Debug, thiserror::Error)]
#[error("invalid LSN {0:?}: expected two hexadecimal numbers separated by '/', like 16/B374D848")]
pub struct InvalidLsn(String);

impl FromStr for Lsn {
    type Err = InvalidLsn;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidLsn(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn(((hi as u64) << 32) | lo as u64))
    }
}

impl From<Lsn> for String {
    fn from(l: Lsn) -> String {
        l.to_string()
    }
}

impl TryFrom<String> for Lsn {
    type Error = InvalidLsn;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// A point in a source's change stream. Ordered within one kind of source.
///
/// Each variant is the resume token of one source family; MySQL binlog coordinates and Kafka
/// offsets join as further variants. Sinks store it opaquely (as its JSON form) next to the
/// data it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "at", rename_all = "snake_case")]
pub enum Position {
    /// PostgreSQL: the end LSN of the last transaction covered (or a keepalive's WAL end).
    Pg(Lsn),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Pg(l) => write!(f, "pg:{l}"),
        }
    }
}

/// What a sink has made durable: the position covered and whether the initial snapshot has
/// been completely delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every source transaction ending at or before this position is durable in the sink.
    /// `None` before the first streamed transaction.
    pub position: Option<Position>,
    /// The initial snapshot has been delivered in full.
    pub snapshot_done: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_through_text_and_orders_numerically() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert!("0/FF".parse::<Lsn>().unwrap() < "1/0".parse::<Lsn>().unwrap());
        assert!("zz".parse::<Lsn>().is_err());
        let j = serde_json::to_string(&Position::Pg(l)).unwrap();
        assert_eq!(j, r#"{"kind":"pg","at":"16/B374D848"}"#);
        assert_eq!(serde_json::from_str::<Position>(&j).unwrap(), Position::Pg(l));
    }
}
