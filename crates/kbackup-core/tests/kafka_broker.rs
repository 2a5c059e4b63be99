//! `kafka.rs` and the sink's manifest against a real broker.
//!
//! Needs a running broker: `KBACKUP_TEST_BOOTSTRAP=127.0.0.1:PORT cargo test -p kbackup-core
//! --test kafka_broker` (the Python test bed starts one; tests/integration runs this file with
//! it). Without the variable every test here says so on stderr and passes without checking.

use kbackup_core::codec::BatchRecord;
use kbackup_core::kafka;
use kbackup_core::reader::Backup;
use kbackup_core::record::{Record, TimestampType};
use kbackup_core::sink::{BackupSink, SinkConfig};
use std::collections::BTreeMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn cluster() -> Option<BTreeMap<String, String>> {
    match std::env::var("KBACKUP_TEST_BOOTSTRAP") {
        Ok(b) => Some([("bootstrap.servers".to_string(), b)].into()),
        Err(_) => {
            eprintln!("KBACKUP_TEST_BOOTSTRAP is not set: broker test not run");
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[test]
fn create_then_describe_returns_partitions_and_only_set_configs() {
    let Some(c) = cluster() else { return };
    let topic = unique("kb-describe");
    assert_eq!(kafka::describe_topic(&c, &topic, T).unwrap(), None);
    let configs: BTreeMap<String, String> = [
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("retention.ms".to_string(), "123456789".to_string()),
    ]
    .into();
    kafka::create_topic(&c, &topic, 3, &configs, T).unwrap();
    let d = kafka::describe_topic(&c, &topic, T).unwrap().unwrap();
    assert_eq!(d.partitions, 3);
    assert_eq!(d.configs, configs);
    // Metadata requests must not have auto-created anything, and re-creation is refused.
    let e = kafka::create_topic(&c, &topic, 3, &BTreeMap::new(), T).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    let ends = kafka::end_offsets(&c, &topic, T).unwrap();
    assert_eq!(ends, [(0, (0, 0)), (1, (0, 0)), (2, (0, 0))].into());
}

#[test]
fn end_offsets_of_a_missing_topic_is_not_found() {
    let Some(c) = cluster() else { return };
    let e = kafka::end_offsets(&c, &unique("kb-missing"), T).unwrap_err();
    assert!(matches!(e, kbackup_core::Error::NotFound(_)), "{e}");
}

#[test]
fn sink_manifest_is_described_from_the_cluster() {
    let Some(c) = cluster() else { return };
    let topic = unique("kb-manifest");
    let configs: BTreeMap<String, String> =
        [("cleanup.policy".to_string(), "compact".to_string())].into();
    kafka::create_topic(&c, &topic, 4, &configs, T).unwrap();
    let d = tempfile::tempdir().unwrap();
    let mut cfg = SinkConfig::new(d.path());
    cfg.cluster = c;
    let mut sink = BackupSink::open(cfg).unwrap();
    sink.put(&[BatchRecord {
        topic: topic.clone(),
        partition: 1,
        record: Record {
            offset: 0,
            timestamp: 1,
            timestamp_type: TimestampType::CreateTime,
            key: None,
            value: Some(b"x".to_vec()),
            headers: vec![],
        },
    }])
    .unwrap();
    sink.close().unwrap();
    let m = Backup::open(d.path())
        .unwrap()
        .manifest(&topic)
        .unwrap()
        .unwrap();
    assert_eq!((m.partitions, m.described), (4, true));
    assert_eq!(m.configs, configs);
}
