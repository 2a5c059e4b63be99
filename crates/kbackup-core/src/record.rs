//! The domain types shared by the sink, the readers, the restore, the JNI codec and the CLI:
//! records, topic partitions, batch entries and acknowledgements.
//!
//! It mirrors what a Kafka consumer sees of a record, byte for byte: null stays distinct from
//! empty, header order and duplicate header keys are kept, and the timestamp type travels with
//! the timestamp so a restore can reproduce it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How a record's timestamp was assigned (Kafka's `TimestampType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimestampType {
    /// The record carries no timestamp (the timestamp is -1).
    NoTimestamp = 0,
    /// Set by the producer.
    CreateTime = 1,
    /// Set by the broker when it appended the record.
    LogAppendTime = 2,
}

impl TimestampType {
    /// The wire value (0, 1, 2) back to the enum; `None` for anything else.
    pub fn from_i8(v: i8) -> Option<TimestampType> {
        match v {
            0 => Some(TimestampType::NoTimestamp),
            1 => Some(TimestampType::CreateTime),
            2 => Some(TimestampType::LogAppendTime),
            _ => None,
        }
    }

    /// The wire value used in buffers and segment files.
    pub fn as_i8(self) -> i8 {
        self as i8
    }

    /// The name Kafka's Java client prints (`CreateTime`, `LogAppendTime`, `NoTimestampType`).
    pub fn kafka_name(self) -> &'static str {
        match self {
            TimestampType::NoTimestamp => "NoTimestampType",
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }
    }
}

/// One record header; `value: None` is a null header value, distinct from an empty one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Header {
    /// Header key (Kafka header keys are strings).
    pub key: String,
    /// Header value; `None` means null.
    pub value: Option<Vec<u8>>,
}

/// A record as stored in the backup, keyed by its ORIGINAL offset in the source partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Record {
    /// Offset of the record in the source partition at backup time.
    pub offset: i64,
    /// Timestamp in milliseconds since the epoch (-1 when `NoTimestamp`).
    pub timestamp: i64,
    /// How `timestamp` was assigned.
    pub timestamp_type: TimestampType,
    /// Key; `None` means null.
    pub key: Option<Vec<u8>>,
    /// Value; `None` means null (a tombstone in a compacted topic).
    pub value: Option<Vec<u8>>,
    /// Headers in their original order, duplicates included.
    pub headers: Vec<Header>,
}

impl Record {
    /// Key, value and header bytes: what a record moves (metrics, transaction sizes).
    pub fn payload_bytes(&self) -> u64 {
        let kv = self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len);
        let h: usize = self
            .headers
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len))
            .sum();
        (kv + h) as u64
    }
}

/// A topic and partition number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number (>= 0).
    pub partition: i32,
}

impl TopicPartition {
    /// Convenience constructor.
    pub fn new(topic: impl Into<String>, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// A topic, partition and offset (what `sinkOpenPartitions`/`sinkFlush` answer).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicPartitionOffset {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// The offset; its meaning depends on the call (next offset to fetch, -1 for none, ...).
    pub offset: i64,
}

impl TopicPartitionOffset {
    /// Convenience constructor.
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64) -> TopicPartitionOffset {
        TopicPartitionOffset {
            topic: topic.into(),
            partition,
            offset,
        }
    }

    /// The topic and partition without the offset.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.clone(), self.partition)
    }
}

/// A record together with the topic and partition it belongs to (one entry of a batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRecord {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// The record.
    pub record: Record,
}

/// One acknowledgement: the original offset of a restored record and the offset it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Original (backup) topic.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Offset of the record in the backup.
    pub original_offset: i64,
    /// Offset the record received in the target cluster.
    pub new_offset: i64,
}

/// A record of a batch buffer, borrowed from the buffer.
///
/// `body` is the byte range from the record's offset field through its last header: exactly a
/// segment record body, so the sink appends it without decoding the key, value and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRecordRef<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition number.
    pub partition: i32,
    /// Original offset.
    pub offset: i64,
    /// Timestamp (ms).
    pub timestamp: i64,
    /// The record body as laid out in docs/format.md ("Record body").
    pub body: &'a [u8],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_type_round_trips_and_rejects_unknown() {
        for t in [
            TimestampType::NoTimestamp,
            TimestampType::CreateTime,
            TimestampType::LogAppendTime,
        ] {
            assert_eq!(TimestampType::from_i8(t.as_i8()), Some(t));
        }
        assert_eq!(TimestampType::from_i8(3), None);
        assert_eq!(TimestampType::from_i8(-1), None);
        assert_eq!(TimestampType::LogAppendTime.kafka_name(), "LogAppendTime");
    }
}
