//! Whatever bytes the server sends, decoding returns a value or an error, never panics: the
//! pgoutput messages (plain and inside a stream block) and the column values they carry, in
//! text and binary form, for every built-in type.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_postgres::codec::{decode_binary, decode_text, PgType};
use sluice_postgres::pgoutput::{decode, decode_streamed, streamed_xid};

/// Built-in type OIDs the codecs read: scalars and their array types.
const OIDS: &[u32] = &[
    16, 21, 23, 20, 700, 701, 1700, 25, 17, 1082, 1083, 1266, 1114, 1184, 1186, 2950, 114, 3802, 1000, 1005, 1007, 1016,
    1021, 1022, 1231, 1009, 1001, 1182, 1183, 1270, 1115, 1185, 1187, 2951, 199, 3807,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let raw = Bytes::copy_from_slice(rest);
    match selector % 4 {
        0 => {
            let _ = decode(raw);
        }
        1 => {
            let _ = streamed_xid(rest);
            let _ = decode_streamed(raw);
        }
        mode => {
            let Some((&which, value)) = rest.split_first() else { return };
            let Some(ty) = PgType::from_builtin_oid(OIDS[which as usize % OIDS.len()]) else { return };
            let value = Bytes::copy_from_slice(value);
            let _ = if mode == 2 { decode_text(&ty, value) } else { decode_binary(&ty, value) };
        }
    }
});
