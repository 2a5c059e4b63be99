//! The core's [`ClusterClient`] on the Connect path: every call goes to the Java shim's
//! `io.kbackup.connect.internal.ClusterClient`, which runs Kafka's own Java clients with the
//! connector's Java client properties (JAAS, JKS, callback handlers, config providers). The
//! secrets stay in Java: the core only sees the bootstrap servers.
//!
//! Protocol (docs/jni.md, "Cluster calls"): one method, `byte[] call(String op, byte[] args)`;
//! `args` is a JSON object; the answer is one status byte (0 ok, 1 error) and then JSON (or,
//! for `scan`, the binary record page described there). Java catches everything and answers
//! an error, so no Java exception crosses back here in normal operation; one that does anyway
//! is cleared and becomes an error.

use jni::objects::{GlobalRef, JByteArray, JObject, JValue};
use jni::{JNIEnv, JavaVM};
use kbackup_core::cluster::{ClusterClient, CommitOutcome, GroupCommit};
use kbackup_core::kafka::TopicDescription;
use kbackup_core::reconcile::TargetRecord;
use kbackup_core::record::TopicPartition;
use kbackup_core::{Error, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Most records one `scan` page carries.
const SCAN_PAGE: usize = 2000;

/// A Java `ClusterClient` object, callable from any thread.
pub struct JavaCluster {
    vm: JavaVM,
    client: GlobalRef,
    servers: String,
}

impl JavaCluster {
    /// Wraps the Java object `client`; `servers` is for messages.
    pub fn new(env: &mut JNIEnv, client: &JObject, servers: String) -> Result<JavaCluster> {
        if client.is_null() {
            return Err(Error::State(
                "no cluster client was handed over by the Java shim; the jar and the native \
                 library come from different kbackup versions: use the jar as shipped"
                    .into(),
            ));
        }
        let jni_err = |e: jni::errors::Error| Error::State(format!("JNI: {e}"));
        Ok(JavaCluster {
            vm: env.get_java_vm().map_err(jni_err)?,
            client: env.new_global_ref(client).map_err(jni_err)?,
            servers,
        })
    }

    /// Calls `op` and returns the answer's payload (status byte removed).
    fn call(&self, op: &str, args: &Value) -> Result<Vec<u8>> {
        let what = format!("cluster call {op}");
        let jni_err = |e: jni::errors::Error| Error::Kafka {
            what: what.clone(),
            retriable: true,
            detail: format!("the call into the Java Kafka client failed: {e}"),
        };
        // Attaches the calling thread if it is not a JVM thread (the group-capture thread).
        let mut env = self.vm.attach_current_thread().map_err(jni_err)?;
        let args = serde_json::to_vec(args)
            .map_err(|e| Error::State(format!("could not encode the {op} arguments: {e}")))?;
        let answer: std::result::Result<Vec<u8>, jni::errors::Error> =
            env.with_local_frame(8, |env| {
                let jop = env.new_string(op)?;
                let jargs = env.byte_array_from_slice(&args)?;
                let out = env
                    .call_method(
                        self.client.as_obj(),
                        "call",
                        "(Ljava/lang/String;[B)[B",
                        &[JValue::Object(&jop), JValue::Object(&jargs)],
                    )?
                    .l()?;
                env.convert_byte_array(JByteArray::from(out))
            });
        let bytes = match answer {
            Ok(b) => b,
            Err(e) => {
                if env.exception_check().unwrap_or(false) {
                    let _ = env.exception_clear();
                }
                return Err(jni_err(e));
            }
        };
        match bytes.split_first() {
            Some((0, payload)) => Ok(payload.to_vec()),
            Some((1, payload)) => Err(self.java_error(op, payload)),
            _ => Err(Error::State(format!(
                "the Java cluster client answered {op} with an unknown status"
            ))),
        }
    }

    fn call_json(&self, op: &str, args: &Value) -> Result<Value> {
        let payload = self.call(op, args)?;
        serde_json::from_slice(&payload).map_err(|e| {
            Error::State(format!(
                "the Java cluster client answered {op} with malformed JSON: {e}"
            ))
        })
    }

    /// An error answer: `{"kind", "message", "retriable"}`.
    fn java_error(&self, op: &str, payload: &[u8]) -> Error {
        #[derive(Deserialize)]
        struct JavaError {
            kind: String,
            message: String,
            retriable: bool,
        }
        let e: JavaError = match serde_json::from_slice(payload) {
            Ok(e) => e,
            Err(e) => {
                return Error::State(format!("the Java cluster client failed {op} ({e})"));
            }
        };
        let what = describe_op(op);
        let servers = &self.servers;
        match e.kind.as_str() {
            "not_found" => Error::NotFound(format!("{}: {} (cluster {servers})", what, e.message)),
            "authentication" => Error::Kafka {
                what,
                retriable: false,
                detail: format!(
                    "{}: authentication with the cluster at {servers} failed; fix the \
                     credentials in cluster.sasl.jaas.config / the cluster.ssl.* settings (or \
                     the connector's consumer/producer overrides they fall back to)",
                    e.message
                ),
            },
            "authorization" => Error::Kafka {
                what,
                retriable: false,
                detail: format!(
                    "{}: the connector's principal lacks a permission on the cluster at \
                     {servers}; grant the ACLs listed in docs/security.md",
                    e.message
                ),
            },
            _ => Error::Kafka {
                what,
                retriable: e.retriable,
                detail: format!("{} (cluster {servers})", e.message),
            },
        }
    }
}

fn describe_op(op: &str) -> String {
    op.replace('_', " ")
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn tps_json(tps: &[TopicPartition]) -> Value {
    Value::Array(
        tps.iter()
            .map(|tp| json!([tp.topic, tp.partition]))
            .collect(),
    )
}

fn malformed(op: &str) -> Error {
    Error::State(format!(
        "the Java cluster client answered {op} with an unexpected shape; the jar and the native \
         library come from different kbackup versions"
    ))
}

fn int(v: &Value, op: &str) -> Result<i64> {
    v.as_i64().ok_or_else(|| malformed(op))
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

impl ClusterClient for JavaCluster {
    fn servers(&self) -> String {
        self.servers.clone()
    }

    fn describe_topic(&self, topic: &str, timeout: Duration) -> Result<Option<TopicDescription>> {
        let op = "describe_topic";
        let v = self.call_json(op, &json!({"topic": topic, "timeout_ms": ms(timeout)}))?;
        if !v["exists"].as_bool().ok_or_else(|| malformed(op))? {
            return Ok(None);
        }
        Ok(Some(TopicDescription {
            partitions: i32::try_from(int(&v["partitions"], op)?).map_err(|_| malformed(op))?,
            configs: string_map(&v["configs"]),
        }))
    }

    fn end_offsets(&self, topic: &str, timeout: Duration) -> Result<BTreeMap<i32, (i64, i64)>> {
        let op = "end_offsets";
        let v = self.call_json(op, &json!({"topic": topic, "timeout_ms": ms(timeout)}))?;
        let mut out = BTreeMap::new();
        for e in v["partitions"].as_array().ok_or_else(|| malformed(op))? {
            let p = i32::try_from(int(&e[0], op)?).map_err(|_| malformed(op))?;
            out.insert(p, (int(&e[1], op)?, int(&e[2], op)?));
        }
        Ok(out)
    }

    fn watermarks(
        &self,
        tps: &[TopicPartition],
        timeout: Duration,
    ) -> Result<BTreeMap<TopicPartition, (i64, i64)>> {
        let op = "watermarks";
        let v = self.call_json(
            op,
            &json!({"tps": tps_json(tps), "timeout_ms": ms(timeout)}),
        )?;
        let mut out = BTreeMap::new();
        for e in v["watermarks"].as_array().ok_or_else(|| malformed(op))? {
            let topic = e[0].as_str().ok_or_else(|| malformed(op))?;
            let p = i32::try_from(int(&e[1], op)?).map_err(|_| malformed(op))?;
            out.insert(
                TopicPartition::new(topic, p),
                (int(&e[2], op)?, int(&e[3], op)?),
            );
        }
        Ok(out)
    }

    fn log_end(
        &self,
        topic: &str,
        partition: i32,
        read_committed: bool,
        timeout: Duration,
    ) -> Result<i64> {
        let op = "log_end";
        let v = self.call_json(
            op,
            &json!({"topic": topic, "partition": partition, "read_committed": read_committed,
                    "timeout_ms": ms(timeout)}),
        )?;
        int(&v["end"], op)
    }

    fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<()> {
        self.call_json(
            "create_topic",
            &json!({"topic": topic, "partitions": partitions, "configs": configs,
                    "timeout_ms": ms(timeout)}),
        )
        .map(|_| ())
    }

    fn alter_topic_configs(
        &self,
        topic: &str,
        configs: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<()> {
        self.call_json(
            "alter_topic_configs",
            &json!({"topic": topic, "configs": configs, "timeout_ms": ms(timeout)}),
        )
        .map(|_| ())
    }

    fn consumer_groups(&self, timeout: Duration) -> Result<Vec<String>> {
        let op = "consumer_groups";
        let v = self.call_json(op, &json!({"timeout_ms": ms(timeout)}))?;
        v["groups"]
            .as_array()
            .ok_or_else(|| malformed(op))?
            .iter()
            .map(|g| g.as_str().map(String::from).ok_or_else(|| malformed(op)))
            .collect()
    }

    fn group_offsets(
        &self,
        group: &str,
        tps: &[TopicPartition],
        timeout: Duration,
    ) -> Result<BTreeMap<TopicPartition, (i64, String)>> {
        let op = "group_offsets";
        let v = self.call_json(
            op,
            &json!({"group": group, "tps": tps_json(tps), "timeout_ms": ms(timeout)}),
        )?;
        let mut out = BTreeMap::new();
        for e in v["offsets"].as_array().ok_or_else(|| malformed(op))? {
            let topic = e[0].as_str().ok_or_else(|| malformed(op))?;
            let p = i32::try_from(int(&e[1], op)?).map_err(|_| malformed(op))?;
            let meta = e[3].as_str().unwrap_or_default().to_string();
            out.insert(TopicPartition::new(topic, p), (int(&e[2], op)?, meta));
        }
        Ok(out)
    }

    fn commit_group(
        &self,
        group: &str,
        offsets: &[GroupCommit],
        timeout: Duration,
    ) -> CommitOutcome {
        let list: Vec<Value> = offsets
            .iter()
            .map(|(t, p, o, m)| json!([t, p, o, m]))
            .collect();
        let answer = self.call_json(
            "commit_group",
            &json!({"group": group, "offsets": list, "timeout_ms": ms(timeout)}),
        );
        match answer {
            Err(
                e @ Error::Kafka {
                    retriable: false, ..
                },
            ) => CommitOutcome::Failed(e.to_string()),
            Err(e) => CommitOutcome::Retry(e.to_string()),
            Ok(v) => {
                let why = v["why"].as_str().unwrap_or_default().to_string();
                match v["outcome"].as_str() {
                    Some("done") => CommitOutcome::Done,
                    Some("active") => CommitOutcome::ActiveMembers(why),
                    Some("failed") => CommitOutcome::Failed(why),
                    _ => CommitOutcome::Retry(why),
                }
            }
        }
    }

    fn scan(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        timeout: Duration,
        each: &mut dyn FnMut(TargetRecord) -> bool,
    ) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        let mut next = from;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                log::warn!(
                    "read back {topic}-{partition}: not at the end after {timeout:?}; \
                     reconciling only what was read (the rest is restored again)"
                );
                return Ok(());
            }
            let page = self.call(
                "scan",
                &json!({"topic": topic, "partition": partition, "from": next,
                        "max_records": SCAN_PAGE, "timeout_ms": ms(left)}),
            )?;
            let page = decode_page(&page)?;
            for r in page.records {
                if !each(r) {
                    return Ok(());
                }
            }
            if page.at_end {
                return Ok(());
            }
            next = page.next;
        }
    }
}

/// One `scan` answer: whether the end was reached, where to go on, the records.
struct Page {
    at_end: bool,
    next: i64,
    records: Vec<TargetRecord>,
}

/// Decodes the binary scan page of docs/jni.md (big-endian).
fn decode_page(b: &[u8]) -> Result<Page> {
    let mut r = Reader { b, at: 0 };
    let at_end = r.u8()? != 0;
    let next = r.i64()?;
    let n = r.i32()?;
    let mut records = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(SCAN_PAGE));
    for _ in 0..n {
        let offset = r.i64()?;
        let timestamp = r.i64()?;
        let log_append_time = r.u8()? == 1;
        let key = r.bytes()?;
        let value = r.bytes()?;
        let hn = r.i32()?;
        let mut headers = Vec::new();
        for _ in 0..hn {
            let k = r.bytes()?.unwrap_or_default();
            let k = String::from_utf8(k)
                .map_err(|_| Error::Codec("scan page: header key is not UTF-8".into()))?;
            headers.push((k, r.bytes()?));
        }
        records.push(TargetRecord {
            offset,
            timestamp,
            log_append_time,
            key,
            value,
            headers,
        });
    }
    Ok(Page {
        at_end,
        next,
        records,
    })
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| Error::Codec("scan page is truncated".into()))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn i32(&mut self) -> Result<i32> {
        let s = self.take(4)?;
        Ok(i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn i64(&mut self) -> Result<i64> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(i64::from_be_bytes(a))
    }
    /// Length-prefixed bytes; length -1 is null.
    fn bytes(&mut self) -> Result<Option<Vec<u8>>> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(None);
        }
        Ok(Some(self.take(n as usize)?.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_page_with_nulls_and_headers() {
        let mut b = vec![1u8];
        b.extend(42i64.to_be_bytes());
        b.extend(1i32.to_be_bytes());
        b.extend(7i64.to_be_bytes()); // offset
        b.extend(99i64.to_be_bytes()); // timestamp
        b.push(0); // CreateTime
        b.extend((-1i32).to_be_bytes()); // null key
        b.extend(2i32.to_be_bytes());
        b.extend(b"hi");
        b.extend(1i32.to_be_bytes()); // one header
        b.extend(1i32.to_be_bytes());
        b.extend(b"h");
        b.extend((-1i32).to_be_bytes());
        let p = decode_page(&b).unwrap();
        assert!(p.at_end);
        assert_eq!(p.next, 42);
        assert_eq!(p.records.len(), 1);
        let r = &p.records[0];
        assert_eq!((r.offset, r.timestamp, r.log_append_time), (7, 99, false));
        assert_eq!(r.key, None);
        assert_eq!(r.value.as_deref(), Some(&b"hi"[..]));
        assert_eq!(r.headers, vec![("h".to_string(), None)]);
    }

    #[test]
    fn a_truncated_page_is_an_error_not_a_panic() {
        let mut b = vec![0u8];
        b.extend(42i64.to_be_bytes());
        b.extend(3i32.to_be_bytes());
        assert!(decode_page(&b).is_err());
    }
}
