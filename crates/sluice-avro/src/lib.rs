//! Avro for Sluice's Kafka formats: a record schema for a table (each column with the Avro type,
//! or logical type, that holds its values exactly), rows written in Avro's binary encoding
//! straight from Sluice's values, and the Confluent wire format around them (magic byte 0, the
//! schema's 4-byte registry id, the Avro body).
//!
//! | logical type | Avro |
//! |---|---|
//! | bool | `boolean` |
//! | int8, int16 (marked with `connect.type`), int32, uint8, uint16 | `int` |
//! | int64, uint32 | `long` |
//! | uint64 | `bytes` decimal(20, 0) |
//! | float32, float64 | `float`, `double` |
//! | decimal with precision and scale | `bytes` decimal(p, s) |
//! | decimal without them (and NaN, ±Infinity) | `string` |
//! | text, enum, json, interval (ISO 8601), timetz, other | `string` |
//! | bytes | `bytes` |
//! | date | `int` date |
//! | time | `long` time-micros |
//! | timestamp | `long` local-timestamp-micros |
//! | timestamptz | `long` timestamp-micros |
//! | uuid | `string` uuid |
//! | list of T | `array` of T (elements nullable) |
//!
//! A nullable column is `["null", T]` with default null, so a schema that gains a nullable
//! column stays BACKWARD compatible. Names that Avro does not allow (it wants
//! `[A-Za-z_][A-Za-z0-9_]*`) have each other character replaced by `_`, as Debezium's
//! `sanitize.field.names` does; the original name is kept in the field's `sluice.name` property.

pub mod decode;
mod encode;
mod schema;

pub use decode::{DecodeError, Node, Reader};
pub use encode::{encode_bytes, encode_long, encode_row, frame, unframe, EncodeError};
pub use schema::{avro_name, record_schema, RecordNames};
