//! kbackup-jni: the bridge between the Java shim and `kbackup-core`, and the only crate that
//! knows the JVM.
//!
//! Every `Java_io_kbackup_connect_internal_Native_*` function is here, and each is a few lines
//! inside `boundary::run`, which turns errors and panics into Java exceptions and forwards log
//! lines. Objects Java owns live in handle tables (`handles`); buffers follow docs/jni.md and
//! are decoded by `kbackup_core::codec`.

mod boundary;
mod handles;
mod java_cluster;
mod logging;

use java_cluster::JavaCluster;
use jni::objects::{JByteArray, JClass, JObject};
use jni::sys::{jbyteArray, jint, jlong, jstring};
use jni::JNIEnv;
use kbackup_core::cluster::ClusterClient;
use kbackup_core::codec;
use kbackup_core::restore::{self, props, Polled, RestoreSource, SourceConfig};
use kbackup_core::sink::{BackupSink, SinkConfig};
use kbackup_core::Error;
use std::collections::BTreeMap;
use std::sync::Arc;

use boundary::{bytes_arg, bytes_result, run};
use handles::{lock, Handles};

/// What a failed call returns in place of an array or string (Java sees the exception).
const NO_ARRAY: jbyteArray = std::ptr::null_mut();
const NO_STRING: jstring = std::ptr::null_mut();

/// Open sinks, one per sink task.
static SINKS: Handles<BackupSink> = Handles::new("sink");
/// Open restore readers, one per source task.
static SOURCES: Handles<RestoreSource> = Handles::new("source");

/// Payload bytes above which a `sourcePoll` batch stops before `batch.size` records: a batch
/// of 1,000 records of 64 KiB was 64 MiB copied into the worker's heap twice (the buffer, then
/// the records), and collections took a third of the in-process restore (docs/benchmarks.md).
const SOURCE_POLL_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// `String version()`: core version and format version.
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_version<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
) -> jstring {
    run(&mut env, &class, "version", NO_STRING, |env| {
        let v = format!(
            "kbackup-core {} (format version {})",
            kbackup_core::VERSION,
            kbackup_core::format::FORMAT_VERSION
        );
        env.new_string(v)
            .map(|s| s.into_raw())
            .map_err(|e| Error::State(format!("could not create a Java string: {e}")))
    })
}

/// The Java cluster client as the core's cluster port; `cluster` names the servers.
fn java_cluster(
    env: &mut JNIEnv,
    client: &JObject,
    cluster: &std::collections::BTreeMap<String, String>,
) -> Result<Arc<dyn ClusterClient>, Error> {
    let servers = cluster
        .get("bootstrap.servers")
        .cloned()
        .unwrap_or_else(|| "(no bootstrap servers configured)".into());
    Ok(Arc::new(JavaCluster::new(env, client, servers)?))
}

/// `long sinkOpen(byte[] sinkConfigJson, ClusterClient cluster)`.
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_sinkOpen<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
    config: JByteArray<'l>,
    cluster: JObject<'l>,
) -> jlong {
    run(&mut env, &class, "sinkOpen", 0, |env| {
        let config = SinkConfig::from_json(&bytes_arg(env, &config, "sink config JSON")?)?;
        let client = java_cluster(env, &cluster, &config.cluster)?;
        Ok(SINKS.insert(BackupSink::open_on(config, client)?))
    })
}

/// `byte[] sinkOpenPartitions(long h, byte[] partitions)` -> offsets (resume offsets).
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_sinkOpenPartitions<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
    handle: jlong,
    partitions: JByteArray<'l>,
) -> jbyteArray {
    run(&mut env, &class, "sinkOpenPartitions", NO_ARRAY, |env| {
        let tps = codec::decode_partitions(&bytes_arg(env, &partitions, "partitions")?)?;
        let sink = SINKS.get(handle)?;
        let resume = lock("sink", handle, &sink)?.open_partitions(&tps)?;
        bytes_result(env, &codec::encode_offsets(&resume))
    })
}

/// `void sinkPut(long h, byte[] batch)`: one call per `put()`.
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_sinkPut<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
    handle: jlong,
    batch: JByteArray<'l>,
) {
    run(&mut env, &class, "sinkPut", (), |env| {
        let batch = bytes_arg(env, &batch, "batch")?;
        let sink = SINKS.get(handle)?;
        let mut guard = lock("sink", handle, &sink)?;
        guard.put_encoded(&batch)
    })
}

/// `byte[] sinkFlush(long h)` -> offsets (durable next offsets).
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_sinkFlush<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
    handle: jlong,
) -> jbyteArray {
    run(&mut env, &class, "sinkFlush", NO_ARRAY, |env| {
        let sink = SINKS.get(handle)?;
        let durable = lock("sink", handle, &sink)?.flush()?;
        bytes_result(env, &codec::encode_offsets(&durable))
    })
}

/// `void sinkClosePartitions(long h, byte[] partitions)`.
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_sinkClosePartitions<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
    handle: jlong,
    partitions: JByteArray<'l>,
) {
    run(&mut env, &class, "sinkClosePartitions", (), |env| {
        let tps = codec::decode_partitions(&bytes_arg(env, &partitions, "partitions")?)?;
        let sink = SINKS.get(handle)?;
        let mut guard = lock("sink", handle, &sink)?;
        guard.close_partitions(&tps)
    })
}

/// `void sinkClose(long h)`: safe twice and after a failure.
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_sinkClose<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
    handle: jlong,
) {
    run(&mut env, &class, "sinkClose", (), |_env| {
        let Some(sink) = SINKS.remove(handle) else {
            return Ok(()); // already closed
        };
        let mut guard = lock("sink", handle, &sink)?;
        guard.close()
    })
}

/// How old the cluster end offsets behind the lag metrics may get before a scrape reads them
/// again (one request per partition per refresh, never per record).
const END_OFFSETS_MAX_AGE_MS: i64 = 5_000;
/// Bound on that read, so a scrape never hangs on an unreachable cluster.
const END_OFFSETS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// `byte[] sinkMetrics(long h)` -> JSON `kbackup_core::metrics::SinkMetrics`. Refreshes the
/// cluster end offsets behind the lag when they are older than a few seconds, without holding
/// the sink while the cluster answers.
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_sinkMetrics<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
    handle: jlong,
) -> jbyteArray {
    run(&mut env, &class, "sinkMetrics", NO_ARRAY, |env| {
        let sink = SINKS.get(handle)?;
        let now = kbackup_core::manifest::now_ms();
        let due = lock("sink", handle, &sink)?.end_offsets_due(now, END_OFFSETS_MAX_AGE_MS);
        if let Some((cluster, tps)) = due {
            match cluster.watermarks(&tps, END_OFFSETS_TIMEOUT) {
                Ok(marks) => lock("sink", handle, &sink)?.note_end_offsets(&marks, now),
                Err(e) => log::debug!("metrics: could not read end offsets for the lag: {e}"),
            }
        }
        let metrics = lock("sink", handle, &sink)?.metrics(kbackup_core::manifest::now_ms());
        bytes_result(env, &to_json("sink metrics", &metrics)?)
    })
}

/// `byte[] sourceMetrics(long h)` -> JSON `kbackup_core::metrics::SourceMetrics`.
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_sourceMetrics<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
    handle: jlong,
) -> jbyteArray {
    run(&mut env, &class, "sourceMetrics", NO_ARRAY, |env| {
        let source = SOURCES.get(handle)?;
        let metrics = lock("source", handle, &source)?.metrics();
        bytes_result(env, &to_json("restore metrics", &metrics)?)
    })
}

/// `byte[] listPartitions(byte[] dirUtf8, byte[] storageJson)` -> JSON listing of a backup's
/// topics and partitions (a directory or a bucket, with the connector's `storage.*` settings).
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_listPartitions<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
    dir: JByteArray<'l>,
    storage: JByteArray<'l>,
) -> jbyteArray {
    run(&mut env, &class, "listPartitions", NO_ARRAY, |env| {
        let dir = String::from_utf8(bytes_arg(env, &dir, "backup directory")?)
            .map_err(|_| Error::Codec("backup directory is not UTF-8".into()))?;
        let settings = storage_settings(env, &storage)?;
        let options = settings.options()?;
        let listing = kbackup_core::reader::Backup::open_location(&dir, &options)?.listing()?;
        bytes_result(env, &to_json("backup listing", &listing)?)
    })
}

/// `String localDir(byte[] locationUtf8)`: the local directory of a `target.dir`/`source.dir`
/// value (a plain path or `file://` URL) by the core's one location rule; an object-store URL
/// or another scheme throws `KbackupException` with the message and fix.
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_localDir<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
    location: JByteArray<'l>,
) -> jstring {
    run(&mut env, &class, "localDir", NO_STRING, |env| {
        let location = String::from_utf8(bytes_arg(env, &location, "backup location")?)
            .map_err(|_| Error::Codec("backup location is not UTF-8".into()))?;
        let dir = kbackup_core::storage::local_dir(&location).map_err(Error::Config)?;
        env.new_string(dir.to_string_lossy())
            .map(|s| s.into_raw())
            .map_err(|e| Error::State(format!("could not create a Java string: {e}")))
    })
}

/// `String checkLocation(byte[] locationUtf8, byte[] storageJson, boolean write)`: `null` when
/// a `target.dir` / `source.dir` value is a local directory (the caller checks it as one); `""`
/// when it is an object-store location that answers now with the connector's `storage.*`
/// settings (a JSON object of strings; and takes a probe object when `write`); throws
/// `KbackupException` with the problem and fix otherwise (unreachable, no such bucket, access
/// denied, an unsupported scheme, a bad setting).
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_checkLocation<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
    location: JByteArray<'l>,
    storage: JByteArray<'l>,
    write: jni::sys::jboolean,
) -> jstring {
    run(&mut env, &class, "checkLocation", NO_STRING, |env| {
        let location = String::from_utf8(bytes_arg(env, &location, "backup location")?)
            .map_err(|_| Error::Codec("backup location is not UTF-8".into()))?;
        let settings = storage_settings(env, &storage)?;
        if !kbackup_core::storage::check_reachable(&location, &settings, write != 0)? {
            return Ok(std::ptr::null_mut());
        }
        env.new_string("")
            .map(|s| s.into_raw())
            .map_err(|e| Error::State(format!("could not create a Java string: {e}")))
    })
}

/// The connector's `storage.*` settings, given as a JSON object of strings.
fn storage_settings(
    env: &JNIEnv,
    json: &JByteArray,
) -> Result<kbackup_core::storage::StorageSettings, Error> {
    serde_json::from_slice(&bytes_arg(env, json, "storage settings JSON")?)
        .map_err(|e| Error::Codec(format!("storage settings JSON is not valid: {e}")))
}

/// Serializes a core answer as JSON for Java.
fn to_json(what: &str, value: &impl serde::Serialize) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value)
        .map_err(|e| Error::State(format!("could not serialize the {what}: {e}")))
}

/// The restore config of the connector's raw properties (a JSON object of strings); every
/// parsing and restore rule is in `kbackup_core::restore::props`.
fn source_config(env: &JNIEnv, props: &JByteArray) -> Result<SourceConfig, Error> {
    props::source_config(&source_props(env, props)?)
}

fn source_props(env: &JNIEnv, props: &JByteArray) -> Result<BTreeMap<String, String>, Error> {
    props::props_from_json(&bytes_arg(env, props, "connector properties JSON")?)
}

/// `byte[] sourceValidate(byte[] propsJson)` -> JSON list of `{key, message}`.
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_sourceValidate<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
    props: JByteArray<'l>,
) -> jbyteArray {
    run(&mut env, &class, "sourceValidate", NO_ARRAY, |env| {
        let props = source_props(env, &props)?;
        let problems: Vec<serde_json::Value> = props::validate(&props)
            .into_iter()
            .map(|(key, message)| serde_json::json!({"key": key, "message": message}))
            .collect();
        bytes_result(env, &to_json("validation result", &problems)?)
    })
}

/// `void sourcePrepare(byte[] propsJson, ClusterClient cluster)`: creates or checks the
/// target topics.
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_sourcePrepare<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
    props: JByteArray<'l>,
    cluster: JObject<'l>,
) {
    run(&mut env, &class, "sourcePrepare", (), |env| {
        let cfg = source_config(env, &props)?;
        let client = java_cluster(env, &cluster, &cfg.cluster)?;
        restore::prepare_on(&cfg, client.as_ref())
    })
}

/// `long sourceOpen(byte[] propsJson, byte[] assignment, ClusterClient cluster)`.
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_sourceOpen<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
    props: JByteArray<'l>,
    assignment: JByteArray<'l>,
    cluster: JObject<'l>,
) -> jlong {
    run(&mut env, &class, "sourceOpen", 0, |env| {
        let cfg = source_config(env, &props)?;
        let assignment = codec::decode_offsets(&bytes_arg(env, &assignment, "assignment")?)?;
        let client = java_cluster(env, &cluster, &cfg.cluster)?;
        Ok(SOURCES.insert(RestoreSource::open_on(cfg, &assignment, client)?))
    })
}

/// `byte[] sourcePoll(long h, byte[] acks, int maxRecords)` -> batch.
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_sourcePoll<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
    handle: jlong,
    acks: JByteArray<'l>,
    max_records: jint,
) -> jbyteArray {
    run(&mut env, &class, "sourcePoll", NO_ARRAY, |env| {
        let acks = codec::decode_acks(&bytes_arg(env, &acks, "acks")?)?;
        let max = usize::try_from(max_records).unwrap_or(0).max(1);
        let source = SOURCES.get(handle)?;
        let buf = match lock("source", handle, &source)?.poll_bounded(
            &acks,
            max,
            SOURCE_POLL_MAX_BYTES,
        )? {
            Polled::Records(records) => codec::encode_batch(0, &records),
            Polled::Waiting => codec::encode_batch(codec::FLAG_WAITING_FOR_ACKS, &[]),
            Polled::Finished => codec::encode_batch(codec::FLAG_FINISHED, &[]),
        };
        bytes_result(env, &buf)
    })
}

/// `void sourceAck(long h, byte[] acks)`: hands over acknowledgements and saves the restore
/// state at once (the task's last acknowledgements before it stops).
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_sourceAck<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
    handle: jlong,
    acks: JByteArray<'l>,
) {
    run(&mut env, &class, "sourceAck", (), |env| {
        let acks = codec::decode_acks(&bytes_arg(env, &acks, "acks")?)?;
        let source = SOURCES.get(handle)?;
        let mut guard = lock("source", handle, &source)?;
        guard.ack(&acks)
    })
}

/// `byte[] sourceStatus(long h)` -> JSON status.
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_sourceStatus<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
    handle: jlong,
) -> jbyteArray {
    run(&mut env, &class, "sourceStatus", NO_ARRAY, |env| {
        let source = SOURCES.get(handle)?;
        let status = lock("source", handle, &source)?.status();
        bytes_result(env, &to_json("restore status", &status)?)
    })
}

/// `void sourceClose(long h)`: safe twice and after a failure.
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_sourceClose<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
    handle: jlong,
) {
    run(&mut env, &class, "sourceClose", (), |_env| {
        let Some(source) = SOURCES.remove(handle) else {
            return Ok(()); // already closed
        };
        let mut guard = lock("source", handle, &source)?;
        guard.close()
    })
}

/// `void panicForTest()`: panics on purpose, to prove panics become exceptions.
#[no_mangle]
pub extern "system" fn Java_io_kbackup_connect_internal_Native_panicForTest<'l>(
    mut env: JNIEnv<'l>,
    class: JClass<'l>,
) {
    run(&mut env, &class, "panicForTest", (), |_env| {
        log::warn!(target: "kbackup_jni", "panicForTest called: panicking on purpose");
        panic!("panicForTest: deliberate panic");
    })
}
