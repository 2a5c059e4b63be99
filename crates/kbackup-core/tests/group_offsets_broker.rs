//! Group-offset capture, restore commits and active-member refusal against a REAL broker.
//!
//! Every test is `#[ignore]`d in a plain `cargo test`: tests/integration/
//! test_core_against_broker.py runs them with `KBACKUP_TEST_BOOTSTRAP` naming the test bed's
//! broker.

use kbackup_core::groups::{CaptureConfig, GroupOffsetCapture};
use kbackup_core::record::{Ack, BatchRecord};
use kbackup_core::record::{Record, TimestampType, TopicPartition, TopicPartitionOffset};
use kbackup_core::restore::{self, CommitState, Polled, RestoreSource, SourceConfig};
use kbackup_core::sink::{BackupSink, SinkConfig};
use kbackup_core::translate::Target;
use kbackup_core::{kafka, layout, offsets_log};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn bootstrap() -> BTreeMap<String, String> {
    let b = std::env::var("KBACKUP_TEST_BOOTSTRAP")
        .expect("set KBACKUP_TEST_BOOTSTRAP to a broker's host:port to run this test");
    [("bootstrap.servers".to_string(), b)].into()
}

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{n}")
}

fn group_client(cluster: &BTreeMap<String, String>, group: &str) -> BaseConsumer {
    kafka::client_config(cluster)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

fn commit(cluster: &BTreeMap<String, String>, group: &str, topic: &str, offset: i64) {
    let c = group_client(cluster, group);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
        .unwrap();
    c.commit(&tpl, CommitMode::Sync).unwrap();
}

fn committed(cluster: &BTreeMap<String, String>, group: &str, topic: &str) -> Option<i64> {
    let c = group_client(cluster, group);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = c.committed_offsets(tpl, T).unwrap();
    let el = got.find_partition(topic, 0)?;
    match el.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

#[test]
#[ignore = "needs a broker: tests/integration/test_core_against_broker.py runs it"]
fn capture_appends_only_changes_and_keeps_odd_group_ids() {
    let cluster = bootstrap();
    let topic = unique("cap");
    kafka::create_topic(&cluster, &topic, 1, &BTreeMap::new(), T).unwrap();
    let odd = "g one/../ü ✓";
    commit(&cluster, odd, &topic, 4);
    commit(&cluster, "plain", &topic, 10);
    commit(&cluster, "connect-own", &topic, 1);
    let root = tempfile::tempdir().unwrap();
    let cap = GroupOffsetCapture::start(CaptureConfig {
        root: root.path().to_path_buf(),
        store: None,
        persist_every_ms: 0,
        cluster: std::sync::Arc::new(kbackup_core::kafka::RdKafkaCluster::new(&cluster)),
        include: None,
        exclude: Some("other-.*".into()),
        own_group: Some("connect-own".into()),
        interval_ms: 0,
        perms: kbackup_core::perms::OWNER_ONLY,
    })
    .unwrap();
    cap.set_partitions(vec![TopicPartition::new(topic.clone(), 0)]);
    assert_eq!(cap.capture_now().unwrap(), 2);
    assert_eq!(cap.capture_now().unwrap(), 0, "no change, no entry");
    commit(&cluster, "plain", &topic, 7);
    assert_eq!(cap.capture_now().unwrap(), 1);
    cap.stop();
    let log = layout::group_offsets_log(root.path(), &TopicPartition::new(topic.clone(), 0));
    let latest = offsets_log::latest_per_group(&log).unwrap();
    assert_eq!(latest.len(), 2, "{latest:?}");
    assert_eq!(latest[odd].committed_offset, 4);
    assert_eq!(latest["plain"].committed_offset, 7);
    // A restarted capture reads the log and does not repeat entries.
    let cap = GroupOffsetCapture::start(CaptureConfig {
        root: root.path().to_path_buf(),
        store: None,
        persist_every_ms: 0,
        cluster: std::sync::Arc::new(kbackup_core::kafka::RdKafkaCluster::new(&cluster)),
        include: Some("plain|g one.*".into()),
        exclude: None,
        own_group: None,
        interval_ms: 0,
        perms: kbackup_core::perms::OWNER_ONLY,
    })
    .unwrap();
    cap.set_partitions(vec![TopicPartition::new(topic.clone(), 0)]);
    assert_eq!(cap.capture_now().unwrap(), 0);
    assert_eq!(offsets_log::read_all(&log).unwrap().len(), 3);
}

#[test]
#[ignore = "needs a broker: tests/integration/test_core_against_broker.py runs it"]
fn restore_commits_translated_offsets_and_refuses_active_groups() {
    let cluster = bootstrap();
    let root = tempfile::tempdir().unwrap();
    let source = "orders";
    let target = unique("restored");
    // Backup with gaps: 0 1 2 | 5 6 | 9 (compaction, markers, aborted records on the original).
    let originals = [0i64, 1, 2, 5, 6, 9];
    let mut sink = BackupSink::open(SinkConfig::new(root.path())).unwrap();
    sink.open_partitions(&[TopicPartition::new(source, 0)])
        .unwrap();
    let recs: Vec<BatchRecord> = originals
        .iter()
        .map(|&o| BatchRecord {
            topic: source.into(),
            partition: 0,
            record: Record {
                offset: o,
                timestamp: 1_000 + o, // 1970: would be deleted at once by time retention
                timestamp_type: TimestampType::CreateTime,
                key: None,
                value: Some(format!("v{o}").into_bytes()),
                headers: vec![],
            },
        })
        .collect();
    sink.put(&recs).unwrap();
    sink.flush().unwrap();
    sink.close().unwrap();
    let mut m = kbackup_core::manifest::read_topic_manifest(root.path(), source)
        .unwrap()
        .unwrap_or_else(|| panic!("sink wrote no manifest"));
    m.configs.insert("retention.ms".into(), "86400000".into());
    m.configs.insert("segment.bytes".into(), "1048576".into());
    kbackup_core::manifest::write_topic_manifest(root.path(), &m, kbackup_core::perms::OWNER_ONLY)
        .unwrap();

    let (free, active, ahead) = (unique("free"), unique("active"), unique("ahead"));
    let log = layout::group_offsets_log(root.path(), &TopicPartition::new(source, 0));
    let e = |g: &str, o: i64| offsets_log::GroupOffsetEntry {
        capture_time_ms: 1,
        group: g.into(),
        committed_offset: o,
        metadata: "m".into(),
    };
    offsets_log::append(
        &log,
        &[e(&free, 4), e(&active, 6), e(&ahead, 50)],
        kbackup_core::perms::OWNER_ONLY,
    )
    .unwrap();

    let cfg = SourceConfig {
        connector_name: unique("restore"),
        task_id: "restore-0".into(),
        source_dir: root.path().to_path_buf(),
        topics: vec![source.into()],
        topics_rename: [(source.to_string(), target.clone())].into(),
        batch_size: 100,
        cluster: cluster.clone(),
        restore_state_dir: None,
        allow_non_empty_topics: false,
        restore_group_offsets: true,
        window: Default::default(),
        storage: Default::default(),
    };
    assert!(
        restore::validate(&cfg).is_empty(),
        "{:?}",
        restore::validate(&cfg)
    );
    restore::prepare(&cfg).unwrap();
    let d = kafka::describe_topic(&cluster, &target, T)
        .unwrap()
        .unwrap();
    assert_eq!(
        d.configs.get("retention.ms").map(String::as_str),
        Some("-1")
    );
    assert!(
        !d.configs.contains_key("segment.bytes"),
        "layout configs are not carried"
    );

    // A member of `active` holds the group while the restore finishes.
    let member = group_client(&cluster, &active);
    member.subscribe(&[target.as_str()]).unwrap();
    let deadline = Instant::now() + T;
    while member.assignment().unwrap().count() == 0 {
        assert!(Instant::now() < deadline, "member never joined");
        member.poll(Duration::from_millis(100));
    }

    let producer: BaseProducer = kafka::client_config(&cluster).create().unwrap();
    let mut src =
        RestoreSource::open(cfg.clone(), &[TopicPartitionOffset::new(source, 0, -1)]).unwrap();
    let batch = src.poll(&[], 100).unwrap().into_records();
    assert_eq!(batch.len(), originals.len());
    // Produce one at a time so the new offsets are known: 0..6.
    let mut acks = Vec::new();
    for (i, b) in batch.iter().enumerate() {
        let v = b.record.value.clone().unwrap();
        producer
            .send(BaseRecord::<(), _>::to(&target).partition(0).payload(&v))
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(T).unwrap();
        acks.push(Ack {
            topic: source.into(),
            partition: 0,
            original_offset: b.record.offset,
            new_offset: i as i64,
        });
    }
    let polled = src.poll(&acks, 100).unwrap();
    assert!(matches!(polled, Polled::Finished), "{polled:?}");
    let st = src.status();
    let groups: BTreeMap<_, _> = st.partitions[0]
        .groups
        .iter()
        .map(|g| (g.group.clone(), g.clone()))
        .collect();
    assert_eq!(groups[&free].target, Target::Record(5));
    assert_eq!(groups[&free].commit, CommitState::Committed { offset: 3 });
    assert_eq!(groups[&ahead].commit, CommitState::Committed { offset: 6 });
    assert!(
        matches!(
            groups[&active].commit,
            CommitState::Refused { offset: 4, .. }
        ),
        "{:?}",
        groups[&active].commit
    );
    assert_eq!(committed(&cluster, &free, &target), Some(3));
    assert_eq!(committed(&cluster, &ahead, &target), Some(6));
    drop(member);
    let d = kafka::describe_topic(&cluster, &target, T)
        .unwrap()
        .unwrap();
    assert_eq!(
        d.configs.get("retention.ms").map(String::as_str),
        Some("86400000"),
        "original retention is back once the topic is restored"
    );
    src.close().unwrap();
    let status = restore::read_status(&cfg.state_place().unwrap()).unwrap();
    assert!(status.finished);
    assert!(status.topics[0].configs_restored);
}
