//! Writes the ~1 GB backup used to measure read throughput (docs/reliability.md):
//! `KBACKUP_BIG_DIR=/tmp/big cargo test --release -p kbackup-core --test read_throughput -- --ignored`
//! then `time kbackup verify -q /tmp/big`.

use kbackup_core::record::BatchRecord;
use kbackup_core::record::{Record, TimestampType};
use kbackup_core::sink::{BackupSink, SinkConfig};

#[test]
#[ignore = "writes about 1 GB; run by hand to measure read throughput"]
fn write_a_one_gigabyte_backup() {
    let Some(dir) = std::env::var_os("KBACKUP_BIG_DIR") else {
        return;
    };
    let mut c = SinkConfig::new(&dir);
    c.max_segment_size_bytes = 128 << 20;
    let mut sink = BackupSink::open(c).unwrap();
    // 4 partitions x 256 Ki records of ~1 KiB: 1 GiB of values in 8 segments per partition.
    let value: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    for chunk in 0..256i64 {
        let mut batch = Vec::with_capacity(4096);
        for p in 0..4 {
            for i in 0..1024 {
                let offset = chunk * 1024 + i;
                batch.push(BatchRecord {
                    topic: "big".into(),
                    partition: p,
                    record: Record {
                        offset,
                        timestamp: 1_700_000_000_000 + offset,
                        timestamp_type: TimestampType::CreateTime,
                        key: Some(format!("key-{offset}").into_bytes()),
                        value: Some(value.clone()),
                        headers: vec![],
                    },
                });
            }
        }
        sink.put(&batch).unwrap();
    }
    sink.close().unwrap();
}
