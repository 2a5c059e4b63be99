//! `--metrics-addr`: Prometheus text for `backup --continuous` and `restore`.
//!
//! The figures are the core's snapshots ([`kbackup_core::metrics`]), the same the connector
//! exports over JMX, renamed by Prometheus conventions (`kbackup_sink_records_written_total`
//! for JMX `records-written`, ms as `_seconds`). The main loop publishes a rendered page at
//! most every 250 ms; a std `TcpListener` thread answers `GET /metrics` with the last page.
//! One GET of one text page needs no HTTP crate, and the scrape never touches the writer.

use kbackup_core::metrics::{SinkMetrics, SourceMetrics};
use kbackup_core::{Error, Result};
use serde_json::Value;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the main loop renders a new page.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// Prometheus type of a metric.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// How a snapshot field becomes a Prometheus sample.
struct Def {
    /// Field of the snapshot JSON (the JMX name in snake case).
    key: &'static str,
    /// Prometheus name after the prefix (`kbackup_sink_` ...).
    name: &'static str,
    kind: Kind,
    /// The field is in ms and the metric in seconds.
    ms: bool,
    help: &'static str,
}

const fn def(
    key: &'static str,
    name: &'static str,
    kind: Kind,
    ms: bool,
    help: &'static str,
) -> Def {
    Def {
        key,
        name,
        kind,
        ms,
        help,
    }
}

use Kind::{Counter, Gauge};

#[rustfmt::skip]
const SINK_TASK: &[Def] = &[
    def("records_written", "records_written_total", Counter, false, "Records appended to the backup."),
    def("bytes_written", "bytes_written_total", Counter, false, "Bytes appended to segment files."),
    def("segments_rolled", "segments_rolled_total", Counter, false, "Segments finished because of size or age."),
    def("errors", "errors_total", Counter, false, "Writes and flushes that failed."),
    def("flushes", "flushes_total", Counter, false, "Flushes (fsync rounds) done."),
    def("fsync_last_ms", "fsync_last_seconds", Gauge, true, "Duration of the last flush."),
    def("fsync_avg_ms", "fsync_avg_seconds", Gauge, true, "Mean duration of a flush."),
    def("fsync_time_ms_total", "fsync_seconds_total", Counter, true, "Time spent flushing."),
    def("partitions", "partitions", Gauge, false, "Partitions being backed up."),
    def("lag_records", "lag_records", Gauge, false, "Offsets on the cluster not yet durable in the backup, all partitions."),
    def("lag_ms", "lag_seconds", Gauge, true, "Largest time lag of the partitions (0 when caught up)."),
    def("group_captures", "group_captures_total", Counter, false, "Consumer-group offset captures that succeeded."),
    def("group_capture_errors", "group_capture_errors_total", Counter, false, "Consumer-group offset captures that failed."),
    def("group_capture_last_success_ms", "group_capture_last_success_timestamp_seconds", Gauge, true, "End of the last successful capture, seconds since the epoch."),
    def("groups_captured", "groups_captured", Gauge, false, "Groups read in the last successful capture."),
];

#[rustfmt::skip]
const SINK_PARTITION: &[Def] = &[
    def("records_written", "records_written_total", Counter, false, "Records of the partition appended."),
    def("bytes_written", "bytes_written_total", Counter, false, "Bytes of the partition appended to segment files."),
    def("segments_rolled", "segments_rolled_total", Counter, false, "Segments of the partition finished because of size or age."),
    def("errors", "errors_total", Counter, false, "I/O errors that stopped the partition until it was reopened."),
    def("durable_offset", "durable_offset", Gauge, false, "Last offset on stable storage."),
    def("end_offset", "end_offset", Gauge, false, "End offset of the partition on the cluster at the last read."),
    def("lag_records", "lag_records", Gauge, false, "End offset minus the next offset the backup needs."),
    def("lag_ms", "lag_seconds", Gauge, true, "0 when caught up, else now minus the timestamp of the newest durable record."),
    def("newest_durable_timestamp_ms", "newest_durable_timestamp_seconds", Gauge, true, "Highest timestamp of the durable records, seconds since the epoch."),
];

#[rustfmt::skip]
const SOURCE_TASK: &[Def] = &[
    def("records_restored", "records_restored_total", Counter, false, "Records acknowledged as written to the target."),
    def("bytes_restored", "bytes_restored_total", Counter, false, "Key, value and header bytes of the records sent."),
    def("partitions", "partitions", Gauge, false, "Partitions being restored."),
    def("partitions_done", "partitions_done", Gauge, false, "Partitions whose every backed-up record is acknowledged."),
    def("groups_committed", "groups_committed", Gauge, false, "Consumer groups committed on the target (per partition)."),
    def("groups_pending", "groups_pending", Gauge, false, "Consumer-group commits still waiting."),
    def("groups_refused", "groups_refused", Gauge, false, "Consumer-group commits refused because the group has active members."),
    def("groups_failed", "groups_failed", Gauge, false, "Consumer-group commits that failed."),
    def("finished", "finished", Gauge, false, "1 once the restore is finished."),
];

#[rustfmt::skip]
const SOURCE_PARTITION: &[Def] = &[
    def("records_restored", "records_restored_total", Counter, false, "Records of the partition acknowledged as written."),
    def("acked_offset", "acked_offset", Gauge, false, "Every backed-up record up to this original offset is acknowledged."),
    def("last_offset", "last_offset", Gauge, false, "Last backed-up original offset."),
    def("remaining_offsets", "remaining_offsets", Gauge, false, "Last backed-up offset minus the acknowledged one."),
    def("done", "done", Gauge, false, "1 once every backed-up record of the partition is acknowledged."),
    def("groups_committed", "groups_committed", Gauge, false, "Consumer groups committed on the target."),
    def("groups_pending", "groups_pending", Gauge, false, "Consumer-group commits still waiting."),
    def("groups_refused", "groups_refused", Gauge, false, "Consumer-group commits refused because the group has active members."),
    def("groups_failed", "groups_failed", Gauge, false, "Consumer-group commits that failed."),
];

/// Renders one family of metrics. A negative value means "unknown" in the snapshot: the
/// sample is left out (Prometheus then sees it as absent, not as a lag of -1).
fn render(out: &mut String, prefix: &str, defs: &[Def], rows: &[(Vec<(&str, String)>, &Value)]) {
    for d in defs {
        let name = format!("{prefix}{}", d.name);
        let kind = if d.kind == Counter {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# HELP {name} {}", d.help);
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in rows {
            let Some(x) = v.get(d.key).and_then(Value::as_f64) else {
                continue;
            };
            if x < 0.0 {
                continue;
            }
            let x = if d.ms { x / 1000.0 } else { x };
            let labels = if labels.is_empty() {
                String::new()
            } else {
                let l: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                format!("{{{}}}", l.join(","))
            };
            let _ = writeln!(out, "{name}{labels} {x}");
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn partition_rows(v: &Value) -> Vec<(Vec<(&'static str, String)>, &Value)> {
    v.get("partition_metrics")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| {
                    let labels = vec![
                        ("topic", p["topic"].as_str().unwrap_or_default().to_string()),
                        ("partition", p["partition"].to_string()),
                    ];
                    (labels, p)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The Prometheus page of a backup.
pub fn render_sink(m: &SinkMetrics) -> String {
    let v = serde_json::to_value(m).unwrap_or_default();
    let mut out = String::new();
    render(&mut out, "kbackup_sink_", SINK_TASK, &[(Vec::new(), &v)]);
    render(
        &mut out,
        "kbackup_sink_partition_",
        SINK_PARTITION,
        &partition_rows(&v),
    );
    out
}

/// The Prometheus page of a restore.
pub fn render_source(m: &SourceMetrics) -> String {
    let v = serde_json::to_value(m).unwrap_or_default();
    let mut out = String::new();
    render(
        &mut out,
        "kbackup_source_",
        SOURCE_TASK,
        &[(Vec::new(), &v)],
    );
    render(
        &mut out,
        "kbackup_source_partition_",
        SOURCE_PARTITION,
        &partition_rows(&v),
    );
    out
}

/// Every metric name the CLI can export.
#[cfg(test)]
fn all_names() -> Vec<String> {
    let mut out = Vec::new();
    for (prefix, defs) in [
        ("kbackup_sink_", SINK_TASK),
        ("kbackup_sink_partition_", SINK_PARTITION),
        ("kbackup_source_", SOURCE_TASK),
        ("kbackup_source_partition_", SOURCE_PARTITION),
    ] {
        out.extend(defs.iter().map(|d| format!("{prefix}{}", d.name)));
    }
    out
}

/// The HTTP endpoint and the page it serves.
pub struct MetricsServer {
    page: Arc<Mutex<String>>,
    last: Option<Instant>,
}

impl MetricsServer {
    /// Binds `addr` (HOST:PORT) and answers scrapes on a background thread until the process
    /// exits.
    pub fn start(addr: &str) -> Result<MetricsServer> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            Error::Config(format!(
                "--metrics-addr {addr}: cannot listen there ({e}); give a free HOST:PORT, for \
                 example 127.0.0.1:9464"
            ))
        })?;
        let page = Arc::new(Mutex::new(String::new()));
        let shared = Arc::clone(&page);
        std::thread::Builder::new()
            .name("kbackup-metrics".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    // One slow or broken client must not stop the others.
                    let _ = answer(conn, &shared);
                }
            })
            .map_err(|e| Error::State(format!("could not start the metrics thread: {e}")))?;
        log::info!("serving Prometheus metrics on http://{addr}/metrics");
        Ok(MetricsServer { page, last: None })
    }

    /// True when a new page is due (at most one per [`PUBLISH_EVERY`]).
    pub fn due(&self) -> bool {
        self.last.is_none_or(|t| t.elapsed() >= PUBLISH_EVERY)
    }

    /// Replaces the page served.
    pub fn publish(&mut self, page: String) {
        *self.page.lock().unwrap_or_else(|p| p.into_inner()) = page;
        self.last = Some(Instant::now());
    }
}

/// Answers one connection: the page for `GET /metrics`, 404 otherwise.
fn answer(mut conn: TcpStream, page: &Mutex<String>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    // Up to the end of the headers (or 8 KiB): the request line is all that matters.
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&req);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body, ctype) =
        if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
            let body = page.lock().unwrap_or_else(|p| p.into_inner()).clone();
            ("200 OK", body, "text/plain; version=0.0.4; charset=utf-8")
        } else {
            (
                "404 Not Found",
                "only GET /metrics is served here\n".to_string(),
                "text/plain; charset=utf-8",
            )
        };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kbackup_core::metrics::SinkPartitionMetrics;

    #[test]
    fn sink_page_uses_prometheus_names_seconds_and_leaves_unknowns_out() {
        let m = SinkMetrics {
            records_written: 7,
            lag_records: -1,
            lag_ms: -1,
            fsync_last_ms: 2.5,
            group_capture_last_success_ms: -1,
            partition_metrics: vec![SinkPartitionMetrics {
                topic: "a\"b".into(),
                partition: 3,
                records_written: 7,
                durable_offset: 6,
                end_offset: 9,
                lag_records: 2,
                lag_ms: 1500,
                newest_durable_timestamp_ms: -1,
                ..SinkPartitionMetrics::default()
            }],
            ..SinkMetrics::default()
        };
        let page = render_sink(&m);
        assert!(page.contains("# TYPE kbackup_sink_records_written_total counter\nkbackup_sink_records_written_total 7\n"), "{page}");
        assert!(
            page.contains("kbackup_sink_fsync_last_seconds 0.0025\n"),
            "{page}"
        );
        assert!(
            !page.contains("\nkbackup_sink_lag_records "),
            "unknown lag is left out: {page}"
        );
        assert!(
            page.contains(
                "kbackup_sink_partition_lag_seconds{topic=\"a\\\"b\",partition=\"3\"} 1.5\n"
            ),
            "{page}"
        );
        assert!(
            !page.contains("kbackup_sink_partition_newest_durable_timestamp_seconds{"),
            "{page}"
        );
        for name in all_names() {
            assert!(
                name.starts_with("kbackup_") && !name.contains('-'),
                "{name}"
            );
        }
    }

    #[test]
    fn server_answers_get_metrics_and_404s_the_rest() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        let mut s = MetricsServer::start(&addr).unwrap();
        s.publish("kbackup_source_finished 1\n".into());
        let get = |path: &str| {
            let mut c = TcpStream::connect(&addr).unwrap();
            write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut r = String::new();
            c.read_to_string(&mut r).unwrap();
            r
        };
        let ok = get("/metrics");
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("kbackup_source_finished 1\n"),
            "{ok}"
        );
        assert!(get("/").starts_with("HTTP/1.1 404"));
        assert!(MetricsServer::start(&addr).is_err(), "the port is taken");
    }
}
