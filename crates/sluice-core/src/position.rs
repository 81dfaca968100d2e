//! Progress through a source's change stream, one type per source family.
//!
//! A [`Position`] is a resume point: everything before it has been delivered. PostgreSQL's is a
//! WAL position, MySQL's a binlog file and offset with the set of GTIDs executed, Kafka's the
//! next offset of every partition. The last two are not totally ordered (two sinks may each hold
//! partitions the other lacks), so the runtime never compares positions with `<`; it uses the
//! operations here:
//!
//! - [`Position::covers`]: is a transaction (identified by where it starts) already delivered?
//!   This is how a restart skips what a sink already holds.
//! - [`Position::advance`]: move forward past what a transaction or heartbeat reached.
//! - [`Position::meet`]: the greatest position every one of several sinks has reached, which is
//!   what the source may release (confirm a slot, commit consumer offsets).

use std::collections::BTreeMap;
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

/// Text that is not a valid position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid position {0}")]
pub struct InvalidPosition(String);

impl FromStr for Lsn {
    type Err = InvalidPosition;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || InvalidPosition(format!("{s:?}: expected two hexadecimal numbers separated by '/', like 16/B374D848"));
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
    type Error = InvalidPosition;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// One global transaction id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Gtid {
    /// MySQL: source UUID (with its tag, if any, as `uuid:tag`) and transaction number
    MySql {
        /// `uuid` or `uuid:tag`, lower case
        source: String,
        /// Transaction number, from 1
        number: u64,
    },
    /// MariaDB: domain, server id and sequence number
    MariaDb {
        /// Replication domain
        domain: u32,
        /// Server that wrote it
        server: u32,
        /// Sequence number within the domain
        seq: u64,
    },
}

/// A set of GTIDs, in the form of the server that wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GtidSet {
    /// MySQL: per source, closed intervals of transaction numbers (sorted, disjoint,
    /// non-adjacent)
    MySql(BTreeMap<String, Vec<(u64, u64)>>),
    /// MariaDB: per domain, the last (server, sequence number) applied; a domain's
    /// transactions apply in sequence order, so everything up to it is included
    MariaDb(BTreeMap<u32, (u32, u64)>),
}

impl GtidSet {
    /// Whether `g` is in the set.
    pub fn contains(&self, g: &Gtid) -> bool {
        match (self, g) {
            (GtidSet::MySql(m), Gtid::MySql { source, number }) => {
                m.get(source).is_some_and(|iv| iv.iter().any(|&(a, b)| a <= *number && *number <= b))
            }
            (GtidSet::MariaDb(m), Gtid::MariaDb { domain, seq, .. }) => m.get(domain).is_some_and(|&(_, s)| *seq <= s),
            _ => false,
        }
    }

    /// Adds one GTID.
    pub fn insert(&mut self, g: &Gtid) {
        match (self, g) {
            (GtidSet::MySql(m), Gtid::MySql { source, number }) => {
                let iv = m.entry(source.clone()).or_default();
                iv.push((*number, *number));
                normalise(iv);
            }
            (GtidSet::MariaDb(m), Gtid::MariaDb { domain, server, seq }) => {
                let e = m.entry(*domain).or_insert((*server, *seq));
                if *seq >= e.1 {
                    *e = (*server, *seq);
                }
            }
            _ => {}
        }
    }

    /// Every GTID in either set.
    pub fn union(&self, other: &GtidSet) -> GtidSet {
        match (self, other) {
            (GtidSet::MySql(a), GtidSet::MySql(b)) => {
                let mut out = a.clone();
                for (src, iv) in b {
                    let e = out.entry(src.clone()).or_default();
                    e.extend(iv.iter().copied());
                    normalise(e);
                }
                GtidSet::MySql(out)
            }
            (GtidSet::MariaDb(a), GtidSet::MariaDb(b)) => {
                let mut out = a.clone();
                for (d, &(server, seq)) in b {
                    let e = out.entry(*d).or_insert((server, seq));
                    if seq > e.1 {
                        *e = (server, seq);
                    }
                }
                GtidSet::MariaDb(out)
            }
            _ => self.clone(),
        }
    }

    /// The GTIDs in both sets.
    pub fn intersection(&self, other: &GtidSet) -> GtidSet {
        match (self, other) {
            (GtidSet::MySql(a), GtidSet::MySql(b)) => {
                let mut out = BTreeMap::new();
                for (src, ia) in a {
                    let Some(ib) = b.get(src) else { continue };
                    let mut iv = Vec::new();
                    for &(a0, a1) in ia {
                        for &(b0, b1) in ib {
                            let (lo, hi) = (a0.max(b0), a1.min(b1));
                            if lo <= hi {
                                iv.push((lo, hi));
                            }
                        }
                    }
                    normalise(&mut iv);
                    if !iv.is_empty() {
                        out.insert(src.clone(), iv);
                    }
                }
                GtidSet::MySql(out)
            }
            (GtidSet::MariaDb(a), GtidSet::MariaDb(b)) => GtidSet::MariaDb(
                a.iter().filter_map(|(d, &x)| b.get(d).map(|&y| (*d, if x.1 <= y.1 { x } else { y }))).collect(),
            ),
            _ => match self {
                GtidSet::MySql(_) => GtidSet::MySql(BTreeMap::new()),
                GtidSet::MariaDb(_) => GtidSet::MariaDb(BTreeMap::new()),
            },
        }
    }

    /// Whether every GTID of `self` is in `other`.
    pub fn is_subset(&self, other: &GtidSet) -> bool {
        self.intersection(other) == *self
    }
}

fn normalise(iv: &mut Vec<(u64, u64)>) {
    iv.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(iv.len());
    for &(a, b) in iv.iter() {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    *iv = out;
}

impl fmt::Display for GtidSet {
    /// The server's own text form: `uuid:1-5:7,uuid2:1-3` (MySQL) or `0-1-100,1-2-5` (MariaDB).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GtidSet::MySql(m) => {
                for (i, (src, iv)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(src)?;
                    for &(a, b) in iv {
                        if a == b {
                            write!(f, ":{a}")?;
                        } else {
                            write!(f, ":{a}-{b}")?;
                        }
                    }
                }
                Ok(())
            }
            GtidSet::MariaDb(m) => {
                for (i, (d, (server, seq))) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{d}-{server}-{seq}")?;
                }
                Ok(())
            }
        }
    }
}

impl FromStr for GtidSet {
    type Err = InvalidPosition;

    /// Parses either server's form: a set containing `:` is MySQL's, otherwise MariaDB's.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| InvalidPosition(format!("GTID set {s:?}: {why}"));
        let s = s.trim();
        if s.contains(':') {
            let mut m: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
            for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let mut segs = part.split(':');
                let uuid = segs.next().unwrap_or("").to_ascii_lowercase();
                if uuid.len() != 36 {
                    return Err(bad("expected a source UUID before ':'"));
                }
                let mut source = uuid.clone();
                for seg in segs {
                    if seg.starts_with(|c: char| c.is_ascii_digit()) {
                        let (a, b) = match seg.split_once('-') {
                            Some((a, b)) => (a, b),
                            None => (seg, seg),
                        };
                        let a: u64 = a.parse().map_err(|_| bad("bad interval"))?;
                        let b: u64 = b.parse().map_err(|_| bad("bad interval"))?;
                        if a == 0 || b < a {
                            return Err(bad("intervals run from 1 upwards"));
                        }
                        m.entry(source.clone()).or_default().push((a, b));
                    } else {
                        // MySQL 8.3+ tagged GTIDs: `uuid:tag:1-5`.
                        source = format!("{uuid}:{}", seg.to_ascii_lowercase());
                    }
                }
            }
            for iv in m.values_mut() {
                normalise(iv);
            }
            Ok(GtidSet::MySql(m))
        } else {
            let mut m = BTreeMap::new();
            for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let nums: Vec<&str> = part.split('-').collect();
                if nums.len() != 3 {
                    return Err(bad("expected domain-server-sequence"));
                }
                let d: u32 = nums[0].parse().map_err(|_| bad("bad domain"))?;
                let srv: u32 = nums[1].parse().map_err(|_| bad("bad server id"))?;
                let seq: u64 = nums[2].parse().map_err(|_| bad("bad sequence number"))?;
                m.insert(d, (srv, seq));
            }
            Ok(GtidSet::MariaDb(m))
        }
    }
}

impl Serialize for GtidSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for GtidSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A MySQL/MariaDB binlog coordinate, with the GTIDs executed up to it when the server uses
/// GTIDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPosition {
    /// Binlog file name, e.g. `mysql-bin.000012`
    pub file: String,
    /// Byte offset in the file
    pub pos: u64,
    /// GTIDs executed (a resume point) or the transaction's own GTID (a transaction's start)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtids: Option<GtidSet>,
}

impl BinlogPosition {
    /// Orders coordinates by file sequence number, then offset. Files of a different base name
    /// (the server's log was renamed) compare by name.
    fn coord_cmp(&self, other: &BinlogPosition) -> std::cmp::Ordering {
        fn split(f: &str) -> (&str, Option<u64>) {
            match f.rsplit_once('.') {
                Some((base, n)) => (base, n.parse().ok()),
                None => (f, None),
            }
        }
        let (ba, na) = split(&self.file);
        let (bb, nb) = split(&other.file);
        match (ba == bb, na, nb) {
            (true, Some(a), Some(b)) => a.cmp(&b).then(self.pos.cmp(&other.pos)),
            _ => self.file.cmp(&other.file).then(self.pos.cmp(&other.pos)),
        }
    }
}

/// Kafka: per topic and partition, the next offset to read. As JSON, `{"topic": {"0": 42}}`:
/// partitions are object keys, written and read as text (serde cannot read integer keys back
/// through the buffering that [`Position`]'s tagged form needs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KafkaOffsets(pub BTreeMap<String, BTreeMap<i32, i64>>);

impl Serialize for KafkaOffsets {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text: BTreeMap<&str, BTreeMap<String, i64>> =
            self.0.iter().map(|(t, ps)| (t.as_str(), ps.iter().map(|(p, o)| (p.to_string(), *o)).collect())).collect();
        text.serialize(s)
    }
}

impl<'de> Deserialize<'de> for KafkaOffsets {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = BTreeMap::<String, BTreeMap<String, i64>>::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (t, ps) in text {
            let mut parts = BTreeMap::new();
            for (p, o) in ps {
                let p: i32 = p.parse().map_err(|_| serde::de::Error::custom(format!("partition {p:?} of {t}")))?;
                parts.insert(p, o);
            }
            out.insert(t, parts);
        }
        Ok(KafkaOffsets(out))
    }
}

impl KafkaOffsets {
    /// The next offset of `topic`/`partition`, if any record of it was delivered.
    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.0.get(topic).and_then(|p| p.get(&partition)).copied()
    }

    /// Sets the next offset of `topic`/`partition`.
    pub fn set(&mut self, topic: &str, partition: i32, next: i64) {
        self.0.entry(topic.to_string()).or_default().insert(partition, next);
    }

    /// The offsets of the partitions that `scope` names (its offsets are ignored).
    pub fn only(&self, scope: &KafkaOffsets) -> KafkaOffsets {
        let mut out = KafkaOffsets::default();
        for (topic, p, o) in self.entries() {
            if scope.get(topic, p).is_some() {
                out.set(topic, p, o);
            }
        }
        out
    }

    /// Every (topic, partition, next offset).
    pub fn entries(&self) -> impl Iterator<Item = (&String, i32, i64)> {
        self.0.iter().flat_map(|(t, ps)| ps.iter().map(move |(p, o)| (t, *p, *o)))
    }
}

/// A point in a source's change stream: a resume point after delivered work, or (in
/// [`crate::TxnMeta::position`]) where one transaction starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "at", rename_all = "snake_case")]
pub enum Position {
    /// PostgreSQL: as a resume point, the end LSN of the last transaction covered (or a
    /// keepalive's WAL end); as a transaction's start, its commit LSN.
    Pg(Lsn),
    /// MySQL/MariaDB: as a resume point, the coordinate after the last transaction and the GTIDs
    /// executed; as a transaction's start, the coordinate of its first event and its GTID.
    #[serde(rename = "mysql")]
    MySql(BinlogPosition),
    /// Kafka: as a resume point, the next offset per partition; as a transaction's start, the
    /// offset of its record(s).
    Kafka(KafkaOffsets),
}

impl Position {
    /// Whether the transaction starting at `txn` ends at or before this resume point, so a sink
    /// that holds this position already holds that transaction. Positions of different source
    /// families never cover each other.
    pub fn covers(&self, txn: &Position) -> bool {
        match (self, txn) {
            (Position::Pg(at), Position::Pg(commit)) => commit < at,
            (Position::MySql(at), Position::MySql(t)) => match (&at.gtids, &t.gtids) {
                (Some(done), Some(g)) => g.is_subset(done),
                _ => t.coord_cmp(at).is_lt(),
            },
            (Position::Kafka(at), Position::Kafka(t)) => {
                let mut any = false;
                for (topic, p, o) in t.entries() {
                    any = true;
                    if at.get(topic, p).is_none_or(|next| o >= next) {
                        return false;
                    }
                }
                any
            }
            _ => false,
        }
    }

    /// [`Position::advance`] of an optional resume point: `later` itself when there is none yet.
    pub fn advance_into(slot: &mut Option<Position>, later: &Position) {
        match slot {
            Some(p) => p.advance(later),
            None => *slot = Some(later.clone()),
        }
    }

    /// Moves this resume point forward to include `later` (a commit's or heartbeat's resume
    /// point, which for Kafka may name only some partitions). Never moves backwards.
    pub fn advance(&mut self, later: &Position) {
        match (self, later) {
            (Position::Pg(a), Position::Pg(b)) => *a = (*a).max(*b),
            (Position::MySql(a), Position::MySql(b)) => {
                let gtids = match (&a.gtids, &b.gtids) {
                    (Some(x), Some(y)) => Some(x.union(y)),
                    (x, y) => x.clone().or_else(|| y.clone()),
                };
                if b.coord_cmp(a).is_gt() {
                    a.file = b.file.clone();
                    a.pos = b.pos;
                }
                a.gtids = gtids;
            }
            (Position::Kafka(a), Position::Kafka(b)) => {
                for (topic, p, o) in b.entries() {
                    if a.get(topic, p).is_none_or(|cur| o > cur) {
                        a.set(topic, p, o);
                    }
                }
            }
            (me, other) => *me = other.clone(),
        }
    }

    /// The part of this position that `scope` names: for Kafka, the partitions in `scope`
    /// (its offsets are ignored); other families are one stream, kept whole.
    pub fn within(&self, scope: &Position) -> Position {
        match (self, scope) {
            (Position::Kafka(k), Position::Kafka(s)) => Position::Kafka(k.only(s)),
            _ => self.clone(),
        }
    }

    /// This position as text that sorts in stream order as a plain string, for change logs and
    /// files (`_position`): PostgreSQL LSNs as 16 hex digits; binlog coordinates as the file's
    /// name with its numeric suffix widened to 10 digits, then the offset as 20 digits; Kafka
    /// offsets as `topic/partition/offset` with both numbers widened (these sort in order
    /// within a partition, the only order a topic has).
    pub fn sortable(&self) -> String {
        match self {
            Position::Pg(l) => format!("{:016X}", l.0),
            Position::MySql(b) => {
                let (base, n) = match b.file.rsplit_once('.') {
                    Some((base, n)) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => (base, n),
                    _ => (b.file.as_str(), ""),
                };
                format!("{base}.{n:0>10}:{:020}", b.pos)
            }
            Position::Kafka(k) => {
                k.entries().map(|(t, p, o)| format!("{t}/{p:010}/{o:020}")).collect::<Vec<_>>().join(",")
            }
        }
    }

    /// The greatest position that both `self` and `other` have reached. `None` when they are of
    /// different families (a source changed under the sinks).
    pub fn meet(&self, other: &Position) -> Option<Position> {
        Some(match (self, other) {
            (Position::Pg(a), Position::Pg(b)) => Position::Pg((*a).min(*b)),
            (Position::MySql(a), Position::MySql(b)) => {
                let lower = if a.coord_cmp(b).is_le() { a } else { b };
                let gtids = match (&a.gtids, &b.gtids) {
                    (Some(x), Some(y)) => Some(x.intersection(y)),
                    _ => None,
                };
                Position::MySql(BinlogPosition { file: lower.file.clone(), pos: lower.pos, gtids })
            }
            (Position::Kafka(a), Position::Kafka(b)) => {
                let mut out = KafkaOffsets::default();
                for (topic, p, o) in a.entries() {
                    if let Some(ob) = b.get(topic, p) {
                        out.set(topic, p, o.min(ob));
                    }
                }
                Position::Kafka(out)
            }
            _ => return None,
        })
    }

    /// The meet of every position; `None` for none, or for positions of different families.
    pub fn meet_all<'a>(mut positions: impl Iterator<Item = &'a Position>) -> Option<Position> {
        let first = positions.next()?.clone();
        positions.try_fold(first, |acc, p| acc.meet(p))
    }

    /// Whether `self` has reached at least as far as `other` everywhere (the partial order).
    pub fn includes(&self, other: &Position) -> bool {
        self.meet(other).is_some_and(|m| m == *other)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Pg(l) => write!(f, "pg:{l}"),
            Position::MySql(b) => {
                write!(f, "mysql:{}:{}", b.file, b.pos)?;
                if let Some(g) = &b.gtids {
                    write!(f, " gtids {g}")?;
                }
                Ok(())
            }
            Position::Kafka(k) => {
                f.write_str("kafka:")?;
                for (i, (t, p, o)) in k.entries().enumerate() {
                    write!(f, "{}{t}[{p}]={o}", if i > 0 { "," } else { "" })?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(s: &str) -> Position {
        Position::Pg(s.parse().unwrap())
    }

    #[test]
    fn sortable_text_sorts_in_stream_order() {
        let bin = |f: &str, p: u64| Position::MySql(BinlogPosition { file: f.into(), pos: p, gtids: None });
        let ordered = [pg("0/FFFFFF"), pg("1/0"), pg("10/0")];
        let texts: Vec<String> = ordered.iter().map(Position::sortable).collect();
        assert!(texts.windows(2).all(|w| w[0] < w[1]), "{texts:?}");
        let ordered = [bin("mysql-bin.000009", 900), bin("mysql-bin.000010", 4), bin("mysql-bin.000010", 10)];
        let texts: Vec<String> = ordered.iter().map(Position::sortable).collect();
        assert!(texts.windows(2).all(|w| w[0] < w[1]), "{texts:?}");
        assert!(kafka(&[("t", 1, 9)]).sortable() < kafka(&[("t", 1, 10)]).sortable());
    }

    fn kafka(entries: &[(&str, i32, i64)]) -> Position {
        let mut k = KafkaOffsets::default();
        for (t, p, o) in entries {
            k.set(t, *p, *o);
        }
        Position::Kafka(k)
    }

    fn binlog(file: &str, pos: u64, gtids: Option<&str>) -> Position {
        Position::MySql(BinlogPosition { file: file.into(), pos, gtids: gtids.map(|g| g.parse().unwrap()) })
    }

    #[test]
    fn lsn_round_trips_through_text_and_orders_numerically() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert!("0/FF".parse::<Lsn>().unwrap() < "1/0".parse::<Lsn>().unwrap());
        assert!("zz".parse::<Lsn>().is_err());
        // The stored form of the first release; checkpoints written by it must still load.
        let j = serde_json::to_string(&Position::Pg(l)).unwrap();
        assert_eq!(j, r#"{"kind":"pg","at":"16/B374D848"}"#);
        assert_eq!(serde_json::from_str::<Position>(&j).unwrap(), Position::Pg(l));
    }

    #[test]
    fn pg_positions_cover_transactions_that_commit_before_them() {
        let at = pg("0/200");
        assert!(at.covers(&pg("0/1FF")));
        assert!(!at.covers(&pg("0/200")));
        assert_eq!(pg("0/100").meet(&pg("0/200")), Some(pg("0/100")));
        let mut p = pg("0/100");
        p.advance(&pg("0/50"));
        assert_eq!(p, pg("0/100"), "never moves back");
        p.advance(&pg("0/300"));
        assert_eq!(p, pg("0/300"));
        assert!(!pg("0/300").covers(&kafka(&[("t", 0, 1)])), "families never cover each other");
        assert_eq!(pg("0/1").meet(&kafka(&[])), None);
    }

    #[test]
    fn kafka_meet_is_the_minimum_over_shared_partitions() {
        let a = kafka(&[("t", 0, 10), ("t", 1, 7)]);
        let b = kafka(&[("t", 0, 5), ("u", 0, 3)]);
        assert_eq!(a.meet(&b), Some(kafka(&[("t", 0, 5)])));
        assert_eq!(Position::meet_all([a.clone(), b.clone()].iter()), Some(kafka(&[("t", 0, 5)])));
        // A record is covered once the next offset is past it, in every partition it names.
        assert!(a.covers(&kafka(&[("t", 0, 9)])));
        assert!(!a.covers(&kafka(&[("t", 0, 10)])));
        assert!(!a.covers(&kafka(&[("t", 2, 0)])), "an unseen partition is not covered");
        assert!(!a.covers(&kafka(&[])), "an empty start covers nothing");
        let mut c = a.clone();
        c.advance(&kafka(&[("t", 1, 9), ("v", 3, 1)]));
        assert_eq!(c, kafka(&[("t", 0, 10), ("t", 1, 9), ("v", 3, 1)]));
        assert!(c.includes(&a) && !a.includes(&c));
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(j, r#"{"kind":"kafka","at":{"t":{"0":10,"1":9},"v":{"3":1}}}"#);
        assert_eq!(serde_json::from_str::<Position>(&j).unwrap(), c);
    }

    #[test]
    fn mysql_gtid_sets_parse_combine_and_cover() {
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let s: GtidSet = format!("{}:1-5:7,{u}:6", u.to_uppercase()).parse().unwrap();
        assert_eq!(s.to_string(), format!("{u}:1-7"), "adjacent intervals merge");
        let tagged: GtidSet = format!("{u}:1-3:ops:1-2").parse().unwrap();
        assert_eq!(tagged.to_string(), format!("{u}:1-3,{u}:ops:1-2"));
        assert!(tagged.contains(&Gtid::MySql { source: format!("{u}:ops"), number: 2 }));
        let a: GtidSet = format!("{u}:1-10").parse().unwrap();
        let b: GtidSet = format!("{u}:1-4:8-12").parse().unwrap();
        assert_eq!(a.intersection(&b).to_string(), format!("{u}:1-4:8-10"));
        assert_eq!(a.union(&b).to_string(), format!("{u}:1-12"));
        assert!(!a.contains(&Gtid::MySql { source: u.into(), number: 11 }));
        let at = binlog("mysql-bin.000002", 400, Some(&format!("{u}:1-10")));
        assert!(at.covers(&binlog("mysql-bin.000009", 4, Some(&format!("{u}:10")))), "GTIDs decide when present");
        assert!(!at.covers(&binlog("mysql-bin.000001", 4, Some(&format!("{u}:11")))));
        assert!(binlog("mysql-bin.000010", 4, None).covers(&binlog("mysql-bin.000009", 900, None)));
        assert!(!binlog("mysql-bin.000010", 4, None).covers(&binlog("mysql-bin.000010", 4, None)));
        let m = at.meet(&binlog("mysql-bin.000010", 4, Some(&format!("{u}:1-4")))).unwrap();
        assert_eq!(m, binlog("mysql-bin.000002", 400, Some(&format!("{u}:1-4"))));
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Position>(&j).unwrap(), m);
        for bad in ["x:1", "3e11fa47-71ca-11e1-9e33-c80aa9429562:0", "1-2", "a-b-c"] {
            assert!(bad.parse::<GtidSet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mariadb_gtids_are_per_domain_sequences() {
        let s: GtidSet = "0-1-100,1-2-5".parse().unwrap();
        assert!(s.contains(&Gtid::MariaDb { domain: 0, server: 9, seq: 100 }));
        assert!(!s.contains(&Gtid::MariaDb { domain: 1, server: 2, seq: 6 }));
        assert!(!s.contains(&Gtid::MariaDb { domain: 2, server: 1, seq: 1 }));
        let t: GtidSet = "0-1-50,2-1-1".parse().unwrap();
        assert_eq!(s.intersection(&t).to_string(), "0-1-50");
        assert_eq!(s.union(&t).to_string(), "0-1-100,1-2-5,2-1-1");
        let mut u = t.clone();
        u.insert(&Gtid::MariaDb { domain: 0, server: 3, seq: 51 });
        assert_eq!(u.to_string(), "0-3-51,2-1-1");
        let mut p = binlog("mysql-bin.000001", 100, Some("0-1-5"));
        p.advance(&binlog("mysql-bin.000001", 300, Some("0-1-6")));
        assert_eq!(p, binlog("mysql-bin.000001", 300, Some("0-1-6")));
    }
}
