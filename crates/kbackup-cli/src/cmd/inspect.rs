//! `kbackup inspect`: what a backup holds, per topic and partition.

use super::{print_json, write_stdout};
use clap::Args;
use kbackup_core::Result;
use std::fmt::Write as _;

/// `kbackup inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The backup: a directory, file:///path, or s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix (object stores take their settings and credentials from their
    /// standard environment variables, e.g. AWS_ENDPOINT_URL; docs/storage.md).
    #[arg(value_name = "BACKUP", value_parser = super::backup_location)]
    pub dir: String,
    /// One JSON document on stdout instead of text (same as the connector's inspect call).
    #[arg(long)]
    pub json: bool,
}

/// Runs `kbackup inspect`.
pub fn run(args: &InspectArgs) -> Result<()> {
    let summary = super::open_backup(&args.dir)?.summary()?;
    if args.json {
        return print_json(&summary);
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "backup {} (format version {}): {} topics, {} records, {}{}",
        summary.root.display(),
        summary.format_version,
        summary.topics.len(),
        summary.records,
        human_bytes(summary.bytes),
        stored_vs_raw(summary.raw_bytes, summary.ratio)
    );
    for t in &summary.topics {
        let _ = write!(
            s,
            "\ntopic {}: {} records, {}{}",
            t.topic,
            t.records,
            human_bytes(t.bytes),
            stored_vs_raw(t.raw_bytes, t.ratio)
        );
        match &t.manifest {
            Some(m) => {
                let _ = write!(
                    s,
                    "; {} partitions in the source ({})",
                    m.partitions,
                    if m.described {
                        "read from the cluster"
                    } else {
                        "guessed from the backup"
                    }
                );
                if !m.configs.is_empty() {
                    let cfg: Vec<String> =
                        m.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let _ = write!(s, "; configs: {}", cfg.join(", "));
                }
            }
            None => s.push_str("; no manifest yet"),
        }
        s.push('\n');
        let _ = writeln!(
            s,
            "  {:>9}  {:>20}  {:>20}  {:>12}  {:>10}  {:>8}",
            "partition", "first offset", "last offset", "records", "bytes", "segments"
        );
        for p in &t.partitions {
            let o = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
            let _ = writeln!(
                s,
                "  {:>9}  {:>20}  {:>20}  {:>12}  {:>10}  {:>8}",
                p.partition,
                o(p.first_offset),
                o(p.last_offset),
                p.records,
                human_bytes(p.bytes),
                p.segments
            );
        }
    }
    write_stdout(&mut std::io::stdout().lock(), s.as_bytes())
}

/// " stored (N raw, ratio R)": what compression saved.
fn stored_vs_raw(raw: u64, ratio: Option<f64>) -> String {
    match ratio {
        Some(r) => format!(" stored ({} raw, ratio {r:.3})", human_bytes(raw)),
        None => String::new(),
    }
}

/// 1536 -> "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_bytes_picks_the_unit() {
        assert_eq!(super::human_bytes(12), "12 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(3 << 30), "3.0 GiB");
    }
}
