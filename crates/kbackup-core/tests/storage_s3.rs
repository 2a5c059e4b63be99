//! One contract for every [`Store`], run against a [`LocalStore`] always and against a real S3
//! server when `KBACKUP_TEST_S3_ENDPOINT` is set (with `KBACKUP_TEST_S3_BUCKET` and the
//! standard `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`). `make test` sets them:
//! tests/integration/test_storage_s3.py starts versitygw (tests/testbed/s3.py) and runs this
//! binary against it. Without them the `s3::` cases print that they were skipped.

use kbackup_core::perms::Perms;
use kbackup_core::storage::{
    is_conflict, open_store, LocalStore, RetrySettings, Store, StoreOptions, MIN_PART_SIZE,
};
use kbackup_core::Error;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn local() -> (tempfile::TempDir, Box<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::new(dir.path().join("backup"), Perms::default());
    (dir, Box::new(s))
}

fn s3_env() -> Option<(String, String)> {
    let endpoint = std::env::var("KBACKUP_TEST_S3_ENDPOINT").ok()?;
    let bucket = std::env::var("KBACKUP_TEST_S3_BUCKET").unwrap_or_else(|_| "kbackup-test".into());
    Some((endpoint, bucket))
}

fn s3_options(endpoint: &str) -> StoreOptions {
    StoreOptions {
        endpoint: Some(endpoint.to_string()),
        allow_http: Some(true),
        region: Some("us-east-1".into()),
        part_size: Some(MIN_PART_SIZE),
        ..Default::default()
    }
}

/// A store under a fresh prefix of the test bucket, so cases never see each other's objects.
fn s3(case: &str) -> Option<Box<dyn Store>> {
    let Some((endpoint, bucket)) = s3_env() else {
        eprintln!("skipped: KBACKUP_TEST_S3_ENDPOINT is not set (make test sets it)");
        return None;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let url = format!("s3://{bucket}/{case}-{}-{nanos}", std::process::id());
    Some(open_store(&url, &s3_options(&endpoint)).unwrap())
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(#[test]
            fn $case() {
                let (_dir, s) = super::local();
                super::$case(&*s);
            })*
        }
        mod s3 {
            $(#[test]
            fn $case() {
                if let Some(s) = super::s3(stringify!($case)) {
                    super::$case(&*s);
                }
            })*
        }
    };
}

contract!(
    put_get_range_head_list_delete,
    put_replaces_whole_object,
    put_if_absent_twice_second_is_a_conflict,
    put_if_absent_race_has_exactly_one_winner,
    streamed_object_of_several_parts_is_visible_only_after_complete,
    aborted_or_dropped_writer_leaves_nothing_listed,
    small_streamed_object_and_empty_object,
    range_reads_at_and_past_the_end,
    list_prefix_is_a_directory_not_a_string_prefix,
    missing_objects,
    new_only_streams_of_any_size_never_replace_an_object,
);

fn keys(s: &dyn Store, prefix: &str) -> Vec<String> {
    s.list(prefix).unwrap().into_iter().map(|m| m.key).collect()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[3] ^ seed)
        .collect()
}

fn put_get_range_head_list_delete(s: &dyn Store) {
    let data = pattern(10_000, 1);
    s.put("topics/t/0/00000000000000000000.segment", &data)
        .unwrap();
    s.put("topics/t/0/00000000000000000000.index", b"idx")
        .unwrap();
    s.put("topics/t/manifest.json", b"{}").unwrap();
    assert_eq!(
        s.get("topics/t/0/00000000000000000000.segment").unwrap(),
        data
    );
    assert_eq!(
        s.get_range("topics/t/0/00000000000000000000.segment", 100..4200)
            .unwrap(),
        data[100..4200]
    );
    let h = s
        .head("topics/t/0/00000000000000000000.segment")
        .unwrap()
        .unwrap();
    assert_eq!(h.size, 10_000);
    assert_eq!(
        keys(s, "topics/t"),
        [
            "topics/t/0/00000000000000000000.index",
            "topics/t/0/00000000000000000000.segment",
            "topics/t/manifest.json"
        ]
    );
    let listed = s.list("topics/t/0/").unwrap();
    assert_eq!(
        listed.iter().map(|m| m.size).collect::<Vec<_>>(),
        [3, 10_000]
    );
    assert_eq!(keys(s, "").len(), 3);
    s.delete("topics/t/0/00000000000000000000.index").unwrap();
    s.delete("topics/t/0/00000000000000000000.index").unwrap(); // absent: still fine
    assert_eq!(keys(s, "topics/t/0").len(), 1);
    assert!(s
        .head("topics/t/0/00000000000000000000.index")
        .unwrap()
        .is_none());
}

fn put_replaces_whole_object(s: &dyn Store) {
    s.put("a/m", &pattern(5000, 1)).unwrap();
    s.put("a/m", b"short").unwrap();
    assert_eq!(s.get("a/m").unwrap(), b"short");
    assert_eq!(s.head("a/m").unwrap().unwrap().size, 5);
}

fn put_if_absent_twice_second_is_a_conflict(s: &dyn Store) {
    s.put_if_absent("manifests/00000001", b"first").unwrap();
    let e = s
        .put_if_absent("manifests/00000001", b"second")
        .expect_err("second create must lose");
    assert!(is_conflict(&e), "{e}");
    let m = e.to_string();
    assert!(
        m.contains("another writer") && m.contains("manifests/00000001"),
        "{m}"
    );
    assert_eq!(s.get("manifests/00000001").unwrap(), b"first");
    // other failures are not conflicts
    assert!(!is_conflict(&s.get("manifests/absent").unwrap_err()));
}

fn put_if_absent_race_has_exactly_one_winner(s: &dyn Store) {
    // the store is shared by reference across scoped threads, as tasks of one worker would
    for round in 0..5 {
        let key = format!("race/{round}");
        let barrier = Arc::new(Barrier::new(4));
        let results: Vec<Result<(), Error>> = std::thread::scope(|scope| {
            let hs: Vec<_> = (0..4)
                .map(|i| {
                    let (b, key) = (barrier.clone(), key.clone());
                    scope.spawn(move || {
                        b.wait();
                        s.put_if_absent(&key, format!("writer {i}").as_bytes())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        assert!(results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(is_conflict));
        let won = results.iter().position(|r| r.is_ok()).unwrap();
        assert_eq!(s.get(&key).unwrap(), format!("writer {won}").as_bytes());
    }
    assert_eq!(keys(s, "race").len(), 5);
}

fn streamed_object_of_several_parts_is_visible_only_after_complete(s: &dyn Store) {
    let data = pattern(3 * MIN_PART_SIZE + 12_345, 7);
    let key = "topics/t/1/00000000000000004711.segment";
    let mut w = s.writer(key).unwrap();
    // odd-sized writes so parts never line up with them
    for chunk in data.chunks(1_000_003) {
        w.write(chunk).unwrap();
        assert!(s.head(key).unwrap().is_none(), "visible before complete");
    }
    assert_eq!(w.written(), data.len() as u64);
    assert!(keys(s, "topics").is_empty());
    let m = w.complete().unwrap();
    assert_eq!(m.size, data.len() as u64);
    assert_eq!(s.head(key).unwrap().unwrap().size, data.len() as u64);
    assert_eq!(s.get(key).unwrap(), data);
    // a range across the first part boundary
    let r = (MIN_PART_SIZE as u64 - 10)..(MIN_PART_SIZE as u64 + 10);
    assert_eq!(
        s.get_range(key, r.clone()).unwrap(),
        data[r.start as usize..r.end as usize]
    );
    // a re-upload after a crash lands on the same key and replaces it
    let mut w = s.writer(key).unwrap();
    w.write(b"again").unwrap();
    w.complete().unwrap();
    assert_eq!(s.get(key).unwrap(), b"again");
}

fn new_only_streams_of_any_size_never_replace_an_object(s: &dyn Store) {
    // one part or less (a conditional PUT) and several parts (staged, copied only if absent)
    for (i, len) in [1000, 2 * MIN_PART_SIZE + 777].into_iter().enumerate() {
        let key = format!("topics/t/{i}/00000000000000000000.segment");
        let first = pattern(len, 1);
        let mut w = s.writer_new(&key).unwrap();
        for chunk in first.chunks(777_777) {
            w.write(chunk).unwrap();
        }
        assert!(s.head(&key).unwrap().is_none(), "visible before complete");
        w.complete().unwrap();
        assert_eq!(s.get(&key).unwrap(), first, "{len}");
        // a second writer of the same key (a stale task) loses, whatever it streamed
        let mut w = s.writer_new(&key).unwrap();
        w.write(&pattern(len + 5, 2)).unwrap();
        let e = w.complete().unwrap_err();
        assert!(is_conflict(&e), "{len}: {e}");
        assert_eq!(
            s.get(&key).unwrap(),
            first,
            "{len}: the first writer's object is intact"
        );
    }
    // nothing staged is left behind: only the two objects are listed
    assert_eq!(
        keys(s, ""),
        [
            "topics/t/0/00000000000000000000.segment",
            "topics/t/1/00000000000000000000.segment"
        ]
    );
}

fn aborted_or_dropped_writer_leaves_nothing_listed(s: &dyn Store) {
    let big = pattern(MIN_PART_SIZE + 1000, 3);
    let mut w = s.writer("p/aborted").unwrap();
    w.write(&big).unwrap(); // one part uploaded
    w.abort().unwrap();
    let mut w = s.writer("p/dropped").unwrap();
    w.write(&big).unwrap();
    drop(w);
    let mut w = s.writer("p/small-dropped").unwrap();
    w.write(b"tiny").unwrap();
    drop(w);
    assert!(keys(s, "").is_empty(), "{:?}", keys(s, ""));
    for k in ["p/aborted", "p/dropped", "p/small-dropped"] {
        assert!(s.head(k).unwrap().is_none(), "{k}");
    }
}

fn small_streamed_object_and_empty_object(s: &dyn Store) {
    let mut w = s.writer("s/small").unwrap();
    w.write(b"hello ").unwrap();
    w.write(b"world").unwrap();
    assert!(s.head("s/small").unwrap().is_none());
    w.complete().unwrap();
    assert_eq!(s.get("s/small").unwrap(), b"hello world");
    s.writer("s/empty").unwrap().complete().unwrap();
    assert_eq!(s.head("s/empty").unwrap().unwrap().size, 0);
    assert_eq!(s.get("s/empty").unwrap(), b"");
    s.put("s/empty2", b"").unwrap();
    assert_eq!(s.get("s/empty2").unwrap(), b"");
}

fn range_reads_at_and_past_the_end(s: &dyn Store) {
    s.put("r/x", b"0123456789").unwrap();
    assert_eq!(s.get_range("r/x", 8..20).unwrap(), b"89");
    assert_eq!(s.get_range("r/x", 10..20).unwrap(), b"");
    assert_eq!(s.get_range("r/x", 3..3).unwrap(), b"");
    let e = s.get_range("r/x", 11..20).unwrap_err();
    assert!(e.to_string().contains("past its end"), "{e}");
}

fn list_prefix_is_a_directory_not_a_string_prefix(s: &dyn Store) {
    s.put("a/b/x", b"1").unwrap();
    s.put("a/bc/y", b"2").unwrap();
    assert_eq!(keys(s, "a/b"), ["a/b/x"]);
    assert_eq!(keys(s, "a/bc/"), ["a/bc/y"]);
    assert!(keys(s, "nothing/here").is_empty());
    assert!(
        keys(s, "a/b/x").is_empty(),
        "a prefix naming an object lists nothing"
    );
}

fn missing_objects(s: &dyn Store) {
    let e = s.get("no/such/object").unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    assert!(e.to_string().contains("no/such/object"), "{e}");
    assert!(s.get_range("no/such/object", 0..10).is_err());
    assert!(s.head("no/such/object").unwrap().is_none());
    // keys that could escape the store or collide with its own files are refused
    for bad in ["../x", "/abs", "a//b", ""] {
        assert!(s.put(bad, b"x").is_err(), "{bad:?}");
    }
}

#[test]
fn unsupported_schemes_are_errors_never_local_paths() {
    for url in [
        "http://host/x",
        "ftp://host/x",
        "s4://bucket/x",
        "s3:/bucket/x",
    ] {
        let e = open_store(url, &StoreOptions::default()).unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, Error::Config(_)), "{url}: {e:?}");
        assert!(
            m.contains("s3://bucket/prefix") && m.contains("gs://"),
            "{m}"
        );
        assert!(!std::path::Path::new("s3:").exists());
    }
    let (dir, _) = local();
    let url = format!("file://{}", dir.path().join("via-url").display());
    open_store(&url, &StoreOptions::default())
        .unwrap()
        .put("k", b"v")
        .unwrap();
    assert_eq!(std::fs::read(dir.path().join("via-url/k")).unwrap(), b"v");
}

#[test]
fn part_size_below_the_s3_minimum_is_refused() {
    let o = StoreOptions {
        part_size: Some(1024 * 1024),
        access_key_id: Some("k".into()),
        secret_access_key: Some("s".into()),
        ..Default::default()
    };
    let e = open_store("s3://b/p", &o).unwrap_err().to_string();
    assert!(e.contains("5 MiB"), "{e}");
}

#[test]
fn unreachable_endpoint_fails_after_bounded_retries() {
    // a port nothing listens on
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let o = StoreOptions {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        allow_http: Some(true),
        region: Some("us-east-1".into()),
        access_key_id: Some("k".into()),
        secret_access_key: Some("s".into()),
        retry: RetrySettings {
            max_retries: 3,
            retry_timeout: Duration::from_secs(10),
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        },
        ..Default::default()
    };
    let s = open_store("s3://bucket/p", &o).unwrap();
    let t = Instant::now();
    let e = s.put("k", b"v").unwrap_err();
    let took = t.elapsed();
    eprintln!("unreachable endpoint: failed after {took:?}: {e}");
    let m = e.to_string();
    assert!(
        m.contains("could not reach") && m.contains(&port.to_string()),
        "{m}"
    );
    assert!(m.contains("AWS_ENDPOINT_URL"), "{m}");
    assert!(e.is_retriable(), "{e:?}");
    // 3 retries with backoff of at most 0.1 + 0.2 + 0.4 s (jittered): well under the timeout
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[test]
fn s3_upload_orphaned_by_a_crash_is_aborted_by_the_next_writer() {
    let Some(s) = s3("orphan") else {
        return;
    };
    let mut w = s
        .writer_new("topics/t/0/00000000000000000000.segment")
        .unwrap();
    w.write(&pattern(MIN_PART_SIZE + 10, 4)).unwrap(); // a part is uploaded
    std::mem::forget(w); // the process dies: no abort, no drop
    assert!(
        keys(&*s, "").iter().any(|k| k.ends_with(".upload")),
        "the upload is recorded: {:?}",
        keys(&*s, "")
    );
    // another partition's writer leaves it alone; this partition's next writer aborts it
    assert_eq!(s.abort_orphans("topics/t/1/").unwrap(), 0);
    assert_eq!(s.abort_orphans("topics/t/0/").unwrap(), 1);
    assert!(keys(&*s, "").is_empty(), "{:?}", keys(&*s, ""));
    assert_eq!(s.abort_orphans("topics/t/0/").unwrap(), 0);
    // (test_storage_s3.py checks from the server's side that no upload is left open)
}

#[test]
fn s3_missing_bucket_names_the_bucket_and_the_fix() {
    let Some((endpoint, _)) = s3_env() else {
        eprintln!("skipped: KBACKUP_TEST_S3_ENDPOINT is not set");
        return;
    };
    let s = open_store("s3://no-such-bucket-kbackup/p", &s3_options(&endpoint)).unwrap();
    let e = s.put("k", b"v").unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("no-such-bucket-kbackup")
            && m.contains("does not exist")
            && m.contains("create it"),
        "{m}"
    );
    assert!(!e.is_retriable());
}

#[test]
fn s3_wrong_secret_is_access_denied_naming_the_credentials() {
    let Some((endpoint, bucket)) = s3_env() else {
        eprintln!("skipped: KBACKUP_TEST_S3_ENDPOINT is not set");
        return;
    };
    let o = StoreOptions {
        secret_access_key: Some("not-the-secret".into()),
        ..s3_options(&endpoint)
    };
    let s = open_store(&format!("s3://{bucket}/denied"), &o).unwrap();
    let e = s.put("k", b"v").unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("access denied") && m.contains("AWS_SECRET_ACCESS_KEY"),
        "{m}"
    );
    assert!(!m.contains("not-the-secret"), "{m}");
}

#[test]
fn s3_calls_from_inside_an_async_runtime_fail_instead_of_blocking_it() {
    let Some(s) = s3("in_runtime") else { return };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let e = rt.block_on(async { s.head("x") }).unwrap_err();
    assert!(e.to_string().contains("inside an async runtime"), "{e}");
    assert!(s.head("x").unwrap().is_none()); // fine from a plain thread
}

/// Measures how long the default retry policy takes to give up on a refused connection
/// (docs/storage.md quotes it); ignored because it waits that long.
#[test]
#[ignore]
fn unreachable_endpoint_with_default_retries_takes() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let o = StoreOptions {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        allow_http: Some(true),
        region: Some("us-east-1".into()),
        access_key_id: Some("k".into()),
        secret_access_key: Some("s".into()),
        ..Default::default()
    };
    let s = open_store("s3://bucket/p", &o).unwrap();
    let t = Instant::now();
    let e = s.put("k", b"v").unwrap_err();
    eprintln!("default retries: gave up after {:?}: {e}", t.elapsed());
}
