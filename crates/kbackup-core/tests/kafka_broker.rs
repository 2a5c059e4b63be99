//! `kafka.rs` and the sink's manifest against a real broker.
//!
//! Needs a running broker, so every test is `#[ignore]`d in a plain `cargo test`:
//! tests/integration/test_core_against_broker.py runs them against the test bed's broker
//! (`KBACKUP_TEST_BOOTSTRAP=127.0.0.1:PORT cargo test -p kbackup-core --test kafka_broker --
//! --ignored`).

use kbackup_core::kafka;
use kbackup_core::reader::Backup;
use kbackup_core::record::BatchRecord;
use kbackup_core::record::{Record, TimestampType};
use kbackup_core::sink::{BackupSink, SinkConfig};
use std::collections::BTreeMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn cluster() -> BTreeMap<String, String> {
    match std::env::var("KBACKUP_TEST_BOOTSTRAP") {
        Ok(b) => [("bootstrap.servers".to_string(), b)].into(),
        Err(_) => panic!("set KBACKUP_TEST_BOOTSTRAP to a broker's host:port to run this test"),
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
#[ignore = "needs a broker: tests/integration/test_core_against_broker.py runs it"]
fn create_then_describe_returns_partitions_and_only_set_configs() {
    let c = cluster();
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
#[ignore = "needs a broker: tests/integration/test_core_against_broker.py runs it"]
fn end_offsets_of_a_missing_topic_is_not_found() {
    let c = cluster();
    let e = kafka::end_offsets(&c, &unique("kb-missing"), T).unwrap_err();
    assert!(matches!(e, kbackup_core::Error::NotFound(_)), "{e}");
}

#[test]
#[ignore = "needs a broker: tests/integration/test_core_against_broker.py runs it"]
fn sink_manifest_is_described_from_the_cluster() {
    let c = cluster();
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
