//! The buffers that cross the JNI boundary (docs/jni.md, "Buffers"), encoded and decoded.
//!
//! One buffer per call keeps the boundary cheap: Java packs a whole `put()` batch into one
//! `byte[]`. Decoding is defensive because the bytes come from another program: truncation,
//! negative lengths, unknown enum values, bad UTF-8 and trailing bytes are all
//! [`Error::Codec`], never a panic. A batch record is `topic , partition` followed by a
//! record body exactly as in a segment ([`crate::format::body`]), so the sink can copy it from
//! the batch without re-encoding. The byte primitives are [`crate::format::bytes`]'s.

use crate::error::{Error, Result};
use crate::format::body;
use crate::format::bytes::{put_str16, Cursor, DResult, DecodeError};
use crate::record::{TopicPartition, TopicPartitionOffset};

// Compatibility: the types moved to `record` and the record body to `format::body`; these
// keep the old `codec::` paths working (the sink, the restore, the CLI and prune's tests).
use crate::record::{Ack, BatchRecord, BatchRecordRef};

/// First byte of a batch buffer ('K').
pub const BATCH_MAGIC: u8 = 0x4B;
/// Batch buffer version this code writes and reads.
pub const BATCH_VERSION: u8 = 1;
/// Poll flag: every assigned partition is fully restored and acknowledged.
pub const FLAG_FINISHED: u8 = 0b01;
/// Poll flag: waiting for acknowledgements, nothing to send now.
pub const FLAG_WAITING_FOR_ACKS: u8 = 0b10;

/// A decoding failure of the buffer named `what`, as the error the JNI bridge reports.
fn codec_error(e: DecodeError, what: &str) -> Error {
    Error::Codec(format!(
        "{what} buffer: {} at byte {}",
        e.detail, e.position
    ))
}

// ---------------------------------------------------------------------------------------------
// Batch buffers.

/// Encodes a batch buffer (`batch` in docs/jni.md) with the given poll flags.
pub fn encode_batch(flags: u8, records: &[BatchRecord]) -> Vec<u8> {
    let approx: usize = records
        .iter()
        .map(|r| {
            64 + r.topic.len()
                + r.record.key.as_ref().map_or(0, Vec::len)
                + r.record.value.as_ref().map_or(0, Vec::len)
                + r.record
                    .headers
                    .iter()
                    .map(|h| 6 + h.key.len() + h.value.as_ref().map_or(0, Vec::len))
                    .sum::<usize>()
        })
        .sum();
    let mut buf = Vec::with_capacity(7 + approx);
    buf.push(BATCH_MAGIC);
    buf.push(BATCH_VERSION);
    buf.push(flags);
    buf.extend_from_slice(&(records.len() as i32).to_be_bytes());
    for r in records {
        put_str16(&mut buf, &r.topic);
        buf.extend_from_slice(&r.partition.to_be_bytes());
        body::encode(&mut buf, &r.record);
    }
    buf
}

/// A batch buffer built one record at a time from borrowed parts: how the CLI backup hands
/// consumed messages to the sink ([`crate::sink::BackupSink::put_encoded`]) without an owned
/// record, or a copy of key, value and headers, per message.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    records: usize,
}

impl BatchBuilder {
    /// An empty batch (flags 0).
    pub fn new() -> BatchBuilder {
        let mut b = BatchBuilder::default();
        b.clear();
        b
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.buf
            .extend_from_slice(&[BATCH_MAGIC, BATCH_VERSION, 0, 0, 0, 0, 0]);
        self.records = 0;
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.records
    }

    /// True without records.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Bytes of the batch buffer.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Appends one record.
    #[allow(clippy::too_many_arguments)]
    pub fn push<'a>(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        timestamp: i64,
        timestamp_type: crate::record::TimestampType,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl ExactSizeIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) {
        put_str16(&mut self.buf, topic);
        self.buf.extend_from_slice(&partition.to_be_bytes());
        body::encode_parts(
            &mut self.buf,
            offset,
            timestamp,
            timestamp_type,
            key,
            value,
            headers,
        );
        self.records += 1;
    }

    /// The batch buffer (docs/jni.md), its record count filled in.
    pub fn finish(&mut self) -> &[u8] {
        self.buf[3..7].copy_from_slice(&(self.records as i32).to_be_bytes());
        &self.buf
    }
}

fn batch_header(c: &mut Cursor<'_>) -> DResult<(u8, usize)> {
    let magic = c.u8("magic")?;
    if magic != BATCH_MAGIC {
        return Err(DecodeError {
            position: 0,
            detail: format!("bad magic 0x{magic:02X} (expected 0x4B)"),
        });
    }
    let version = c.u8("version")?;
    if version != BATCH_VERSION {
        return Err(DecodeError {
            position: 1,
            detail: format!("unsupported batch version {version} (expected {BATCH_VERSION}); the jar and the native library come from different kbackup versions"),
        });
    }
    let flags = c.u8("flags")?;
    let n = c.count("record count", 2 + 4 + body::MIN_BODY)?;
    Ok((flags, n))
}

/// Decodes a batch buffer into owned records.
pub fn decode_batch(buf: &[u8]) -> Result<(u8, Vec<BatchRecord>)> {
    let mut c = Cursor::new(buf);
    let inner = |c: &mut Cursor<'_>| -> DResult<(u8, Vec<BatchRecord>)> {
        let (flags, n) = batch_header(c)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let topic = c.str16("topic")?.to_owned();
            let partition = c.i32("partition")?;
            let record = body::decode(c)?;
            out.push(BatchRecord {
                topic,
                partition,
                record,
            });
        }
        c.finish("batch")?;
        Ok((flags, out))
    };
    inner(&mut c).map_err(|e| codec_error(e, "batch"))
}

/// Decodes a batch buffer without copying keys, values or headers (the sink's fast path).
pub fn decode_batch_refs(buf: &[u8]) -> Result<(u8, Vec<BatchRecordRef<'_>>)> {
    fn inner<'a>(buf: &'a [u8], c: &mut Cursor<'a>) -> DResult<(u8, Vec<BatchRecordRef<'a>>)> {
        let (flags, n) = batch_header(c)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let topic = c.str16("topic")?;
            let partition = c.i32("partition")?;
            let start = c.position();
            let (offset, timestamp) = body::skip(c)?;
            out.push(BatchRecordRef {
                topic,
                partition,
                offset,
                timestamp,
                body: &buf[start..c.position()],
            });
        }
        c.finish("batch")?;
        Ok((flags, out))
    }
    let mut c = Cursor::new(buf);
    inner(buf, &mut c).map_err(|e| codec_error(e, "batch"))
}

// ---------------------------------------------------------------------------------------------
// partitions / offsets / acks.

/// Encodes a list buffer: `i32 count` then each item (every item starts with `str16 topic`).
fn encode_list<T>(items: &[T], item_len: usize, put: impl Fn(&mut Vec<u8>, &T)) -> Vec<u8> {
    let mut buf = Vec::with_capacity(4 + items.len() * item_len);
    buf.extend_from_slice(&(items.len() as i32).to_be_bytes());
    for item in items {
        put(&mut buf, item);
    }
    buf
}

/// Decodes a list buffer written by [`encode_list`]: `min_item` is an item's smallest size
/// (bounds the count against the buffer), `what` names the buffer in errors.
fn decode_list<T>(
    buf: &[u8],
    what: &'static str,
    min_item: usize,
    item: impl Fn(&mut Cursor<'_>) -> DResult<T>,
) -> Result<Vec<T>> {
    let mut c = Cursor::new(buf);
    let inner = |c: &mut Cursor<'_>| -> DResult<Vec<T>> {
        let n = c.count("item count", min_item)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(item(c)?);
        }
        c.finish(what)?;
        Ok(out)
    };
    inner(&mut c).map_err(|e| codec_error(e, what))
}

/// Encodes a `partitions` buffer.
pub fn encode_partitions(tps: &[TopicPartition]) -> Vec<u8> {
    encode_list(tps, 32, |buf, tp| {
        put_str16(buf, &tp.topic);
        buf.extend_from_slice(&tp.partition.to_be_bytes());
    })
}

/// Decodes a `partitions` buffer.
pub fn decode_partitions(buf: &[u8]) -> Result<Vec<TopicPartition>> {
    decode_list(buf, "partitions", 2 + 4, |c| {
        Ok(TopicPartition {
            topic: c.str16("topic")?.to_owned(),
            partition: c.i32("partition")?,
        })
    })
}

/// Encodes an `offsets` buffer.
pub fn encode_offsets(offsets: &[TopicPartitionOffset]) -> Vec<u8> {
    encode_list(offsets, 40, |buf, o| {
        put_str16(buf, &o.topic);
        buf.extend_from_slice(&o.partition.to_be_bytes());
        buf.extend_from_slice(&o.offset.to_be_bytes());
    })
}

/// Decodes an `offsets` buffer.
pub fn decode_offsets(buf: &[u8]) -> Result<Vec<TopicPartitionOffset>> {
    decode_list(buf, "offsets", 2 + 4 + 8, |c| {
        Ok(TopicPartitionOffset {
            topic: c.str16("topic")?.to_owned(),
            partition: c.i32("partition")?,
            offset: c.i64("offset")?,
        })
    })
}

/// Encodes an `acks` buffer.
pub fn encode_acks(acks: &[Ack]) -> Vec<u8> {
    encode_list(acks, 48, |buf, a| {
        put_str16(buf, &a.topic);
        buf.extend_from_slice(&a.partition.to_be_bytes());
        buf.extend_from_slice(&a.original_offset.to_be_bytes());
        buf.extend_from_slice(&a.new_offset.to_be_bytes());
    })
}

/// Decodes an `acks` buffer.
pub fn decode_acks(buf: &[u8]) -> Result<Vec<Ack>> {
    decode_list(buf, "acks", 2 + 4 + 8 + 8, |c| {
        Ok(Ack {
            topic: c.str16("topic")?.to_owned(),
            partition: c.i32("partition")?,
            original_offset: c.i64("original offset")?,
            new_offset: c.i64("new offset")?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Header, Record, TimestampType};

    #[test]
    fn a_built_batch_is_the_encoded_batch_byte_for_byte() {
        let mut recs = vec![rec(1), rec(7)];
        recs[1].key = None;
        recs[1].value = Some(Vec::new());
        recs[1].headers = vec![
            Header {
                key: "h".into(),
                value: None,
            },
            Header {
                key: "\u{43a}".into(),
                value: Some(vec![0, 255]),
            },
        ];
        let batch: Vec<BatchRecord> = recs
            .into_iter()
            .enumerate()
            .map(|(i, record)| BatchRecord {
                topic: format!("t{i}"),
                partition: i as i32 + 3,
                record,
            })
            .collect();
        let mut b = BatchBuilder::new();
        for _ in 0..2 {
            b.clear();
            for r in &batch {
                let x = &r.record;
                b.push(
                    &r.topic,
                    r.partition,
                    x.offset,
                    x.timestamp,
                    x.timestamp_type,
                    x.key.as_deref(),
                    x.value.as_deref(),
                    x.headers
                        .iter()
                        .map(|h| (h.key.as_str(), h.value.as_deref())),
                );
            }
            assert_eq!(b.len(), 2);
            assert_eq!(b.finish(), encode_batch(0, &batch).as_slice());
        }
        assert_eq!(decode_batch(b.finish()).unwrap().1, batch);
    }

    fn rec(offset: i64) -> Record {
        Record {
            offset,
            timestamp: 1_700_000_000_000 + offset,
            timestamp_type: TimestampType::CreateTime,
            key: Some(vec![0, 1, 2, 255]),
            value: Some(b"hello".to_vec()),
            headers: vec![],
        }
    }

    fn sample() -> Vec<BatchRecord> {
        vec![
            BatchRecord {
                topic: "orders".into(),
                partition: 0,
                record: rec(0),
            },
            BatchRecord {
                topic: "orders".into(),
                partition: 2,
                record: Record {
                    offset: 17,
                    timestamp: -1,
                    timestamp_type: TimestampType::NoTimestamp,
                    key: None,
                    value: Some(vec![]),
                    headers: vec![
                        Header {
                            key: "k".into(),
                            value: None,
                        },
                        Header {
                            key: "k".into(),
                            value: Some(vec![]),
                        },
                        Header {
                            key: "ünï".into(),
                            value: Some(vec![9; 3]),
                        },
                    ],
                },
            },
            BatchRecord {
                topic: "logs.v2".into(),
                partition: 1,
                record: Record {
                    offset: 1 << 40,
                    timestamp: 5,
                    timestamp_type: TimestampType::LogAppendTime,
                    key: Some(vec![]),
                    value: None,
                    headers: vec![],
                },
            },
        ]
    }

    #[test]
    fn batch_round_trips_every_field_kind() {
        let records = sample();
        let buf = encode_batch(FLAG_WAITING_FOR_ACKS, &records);
        let (flags, back) = decode_batch(&buf).unwrap();
        assert_eq!(flags, FLAG_WAITING_FOR_ACKS);
        assert_eq!(back, records);
        // Null and empty stay distinct.
        assert_eq!(back[1].record.key, None);
        assert_eq!(back[1].record.value, Some(vec![]));
        assert_eq!(back[2].record.key, Some(vec![]));
        assert_eq!(back[2].record.value, None);
    }

    #[test]
    fn batch_layout_matches_jni_md() {
        let buf = encode_batch(0, &sample()[..1]);
        assert_eq!(&buf[..7], &[0x4B, 1, 0, 0, 0, 0, 1]);
        // str16 "orders"
        assert_eq!(&buf[7..9], &[0, 6]);
        assert_eq!(&buf[9..15], b"orders");
        assert_eq!(&buf[15..19], &[0, 0, 0, 0]); // partition
        assert_eq!(&buf[19..27], &0i64.to_be_bytes()); // offset
    }

    #[test]
    fn batch_refs_expose_record_bodies() {
        let records = sample();
        let buf = encode_batch(0, &records);
        let (_, refs) = decode_batch_refs(&buf).unwrap();
        assert_eq!(refs.len(), 3);
        for (r, full) in refs.iter().zip(&records) {
            assert_eq!(r.topic, full.topic);
            assert_eq!(r.offset, full.record.offset);
            let mut body = Vec::new();
            body::encode(&mut body, &full.record);
            assert_eq!(r.body, &body[..]);
            let back = body::decode(&mut Cursor::new(r.body)).unwrap();
            assert_eq!(back, full.record);
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let buf = encode_batch(0, &sample());
        for n in 0..buf.len() {
            let e = decode_batch(&buf[..n]).unwrap_err();
            assert!(matches!(e, Error::Codec(_)), "{n}: {e}");
            assert!(decode_batch_refs(&buf[..n]).is_err());
        }
    }

    #[test]
    fn garbage_is_rejected_with_a_codec_error() {
        let good = encode_batch(0, &sample());
        // Trailing bytes.
        let mut t = good.clone();
        t.push(0);
        assert!(decode_batch(&t)
            .unwrap_err()
            .to_string()
            .contains("trailing"));
        // Bad magic.
        let mut m = good.clone();
        m[0] = 0;
        assert!(decode_batch(&m).unwrap_err().to_string().contains("magic"));
        // Negative record count.
        let mut n = good.clone();
        n[3..7].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(decode_batch(&n).is_err());
        // Huge count does not allocate.
        n[3..7].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_batch(&n)
            .unwrap_err()
            .to_string()
            .contains("cannot fit"));
        // Negative key length other than -1 (key length sits after topic, partition, offset,
        // timestamp and type).
        let mut k = good.clone();
        let key_len_at = 7 + 2 + 6 + 4 + 8 + 8 + 1;
        k[key_len_at..key_len_at + 4].copy_from_slice(&(-2i32).to_be_bytes());
        assert!(decode_batch(&k).unwrap_err().to_string().contains("-2"));
        // Bad timestamp type.
        let mut tt = good.clone();
        tt[key_len_at - 1] = 7;
        assert!(decode_batch(&tt)
            .unwrap_err()
            .to_string()
            .contains("timestamp type"));
        // Bad UTF-8 in the topic.
        let mut u = good.clone();
        u[9] = 0xFF;
        assert!(decode_batch(&u).unwrap_err().to_string().contains("UTF-8"));
        // Every single-byte corruption decodes or fails cleanly.
        for i in 0..good.len() {
            for v in [0x00, 0x7F, 0x80, 0xFF] {
                let mut g = good.clone();
                g[i] = v;
                let _ = decode_batch(&g);
                let _ = decode_batch_refs(&g);
            }
        }
    }

    #[test]
    fn partitions_offsets_acks_round_trip_and_reject_garbage() {
        let tps = vec![
            TopicPartition::new("a", 0),
            TopicPartition::new("b-c.d_e", 7),
        ];
        let buf = encode_partitions(&tps);
        assert_eq!(decode_partitions(&buf).unwrap(), tps);
        assert!(decode_partitions(&buf[..buf.len() - 1]).is_err());
        assert_eq!(decode_partitions(&0i32.to_be_bytes()).unwrap(), vec![]);

        let offs = vec![
            TopicPartitionOffset::new("a", 0, -1),
            TopicPartitionOffset::new("b", 3, i64::MAX),
        ];
        let buf = encode_offsets(&offs);
        assert_eq!(decode_offsets(&buf).unwrap(), offs);
        let mut t = buf.clone();
        t.extend_from_slice(&[1, 2]);
        assert!(decode_offsets(&t).is_err());

        let acks = vec![Ack {
            topic: "x".into(),
            partition: 1,
            original_offset: 10,
            new_offset: 3,
        }];
        let buf = encode_acks(&acks);
        assert_eq!(decode_acks(&buf).unwrap(), acks);
        assert!(decode_acks(&[0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        assert!(decode_acks(&[]).is_err());
    }
}
