//! The record body: one record as stored in a segment frame (docs/format.md, "Record body").
//!
//! The same bytes follow `topic , partition` in each record of the JNI batch buffer
//! (docs/jni.md), so the sink appends a batch's record bodies to segments without re-encoding
//! them; `skip` is how it finds their bounds and checks them.

use super::bytes::{put_bytes32, put_str16, Cursor, DResult, DecodeError};
use crate::record::{Header, Record, TimestampType};

/// Size of the fixed fields of a record body before the key.
pub(crate) const BODY_FIXED: usize = 8 + 8 + 1;
/// Smallest possible record body: fixed fields, null key, null value, zero headers.
pub(crate) const MIN_BODY: usize = BODY_FIXED + 4 + 4 + 4;
/// Largest record body a segment frame holds (its length is below 2^31).
pub const MAX_BODY_LEN: u32 = i32::MAX as u32;

/// Appends a record body: offset, timestamp, type, key, value, headers.
pub(crate) fn encode(buf: &mut Vec<u8>, r: &Record) {
    encode_parts(
        buf,
        r.offset,
        r.timestamp,
        r.timestamp_type,
        r.key.as_deref(),
        r.value.as_deref(),
        r.headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_deref())),
    );
}

/// [`encode`] from borrowed parts (a consumed message's slices), without building a
/// [`Record`] first.
pub(crate) fn encode_parts<'a>(
    buf: &mut Vec<u8>,
    offset: i64,
    timestamp: i64,
    timestamp_type: TimestampType,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: impl ExactSizeIterator<Item = (&'a str, Option<&'a [u8]>)>,
) {
    buf.extend_from_slice(&offset.to_be_bytes());
    buf.extend_from_slice(&timestamp.to_be_bytes());
    buf.push(timestamp_type.as_i8() as u8);
    put_bytes32(buf, key);
    put_bytes32(buf, value);
    buf.extend_from_slice(&(headers.len() as i32).to_be_bytes());
    for (k, v) in headers {
        put_str16(buf, k);
        put_bytes32(buf, v);
    }
}

/// The fields before the key: (offset, timestamp, timestamp type), each checked.
fn fixed(c: &mut Cursor<'_>) -> DResult<(i64, i64, TimestampType)> {
    let offset = c.i64("offset")?;
    if offset < 0 {
        return Err(DecodeError {
            position: c.position() - 8,
            detail: format!("negative record offset {offset}"),
        });
    }
    let timestamp = c.i64("timestamp")?;
    let tt = c.i8("timestamp type")?;
    let timestamp_type = TimestampType::from_i8(tt).ok_or_else(|| DecodeError {
        position: c.position() - 1,
        detail: format!("unknown timestamp type {tt} (expected 0, 1 or 2)"),
    })?;
    Ok((offset, timestamp, timestamp_type))
}

/// Walks a record body without copying; returns (offset, timestamp). Validates every field.
pub(crate) fn skip(c: &mut Cursor<'_>) -> DResult<(i64, i64)> {
    let (offset, timestamp, _) = fixed(c)?;
    c.bytes32("key")?;
    c.bytes32("value")?;
    let n = c.count("header count", 2 + 4)?;
    for _ in 0..n {
        c.str16("header key")?;
        c.bytes32("header value")?;
    }
    Ok((offset, timestamp))
}

/// Checks that `body` is exactly one record body; returns its (offset, timestamp).
pub(crate) fn check(body: &[u8]) -> DResult<(i64, i64)> {
    let mut c = Cursor::new(body);
    let r = skip(&mut c)?;
    c.finish("record body")?;
    Ok(r)
}

/// Decodes a record body into an owned [`Record`].
pub(crate) fn decode(c: &mut Cursor<'_>) -> DResult<Record> {
    let (offset, timestamp, timestamp_type) = fixed(c)?;
    let key = c.bytes32("key")?.map(<[u8]>::to_vec);
    let value = c.bytes32("value")?.map(<[u8]>::to_vec);
    let n = c.count("header count", 2 + 4)?;
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        let key = c.str16("header key")?.to_owned();
        let value = c.bytes32("header value")?.map(<[u8]>::to_vec);
        headers.push(Header { key, value });
    }
    Ok(Record {
        offset,
        timestamp,
        timestamp_type,
        key,
        value,
        headers,
    })
}
