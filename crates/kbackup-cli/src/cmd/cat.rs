//! `kbackup cat`: a topic's records as JSON lines, for eyes, `jq` and test comparisons.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::{Args, ValueEnum};
use kbackup_core::record::Record;
use kbackup_core::{Error, Result};
use serde::Serialize;
use std::io::{BufWriter, Write};

/// Output formats of `cat`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per record and line; bytes as base64, null as null.
    Jsonl,
}

/// `kbackup cat`.
#[derive(Args, Debug)]
pub struct CatArgs {
    /// The backup: a directory, file:///path, or s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix (object stores take their settings and credentials from their
    /// standard environment variables, e.g. AWS_ENDPOINT_URL; docs/storage.md).
    #[arg(value_name = "BACKUP", value_parser = super::backup_location)]
    pub dir: String,
    /// Topic to print.
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,
    /// Only this partition (default: every partition, one after the other).
    #[arg(long, value_name = "P")]
    pub partition: Option<i32>,
    /// Start at the first record with an offset >= N (in each partition printed).
    #[arg(long = "from-offset", value_name = "N")]
    pub from_offset: Option<i64>,
    /// Stop after this many records in total.
    #[arg(long = "max-records", value_name = "N")]
    pub max_records: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    pub format: Format,
}

#[derive(Serialize)]
struct HeaderLine<'a> {
    key: &'a str,
    value: Option<String>,
}

#[derive(Serialize)]
struct Line<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: i64,
    timestamp_type: &'static str,
    key: Option<String>,
    value: Option<String>,
    headers: Vec<HeaderLine<'a>>,
}

fn b64(v: &Option<Vec<u8>>) -> Option<String> {
    v.as_ref().map(|b| STANDARD.encode(b))
}

fn line<'a>(topic: &'a str, partition: i32, r: &'a Record) -> Line<'a> {
    Line {
        topic,
        partition,
        offset: r.offset,
        timestamp: r.timestamp,
        timestamp_type: r.timestamp_type.kafka_name(),
        key: b64(&r.key),
        value: b64(&r.value),
        headers: r
            .headers
            .iter()
            .map(|h| HeaderLine {
                key: &h.key,
                value: b64(&h.value),
            })
            .collect(),
    }
}

/// Runs `kbackup cat`.
pub fn run(args: &CatArgs) -> Result<()> {
    let backup = super::open_backup(&args.dir)?;
    let partitions = match args.partition {
        Some(p) => vec![p],
        None => backup.partitions(&args.topic)?,
    };
    let out_err = |e: std::io::Error| Error::io(e, "write to standard output", "-");
    let mut out = BufWriter::with_capacity(256 * 1024, std::io::stdout().lock());
    let mut left = args.max_records.unwrap_or(u64::MAX);
    for p in partitions {
        let mut reader = backup.partition(&args.topic, p)?;
        if let Some(o) = args.from_offset {
            reader.seek(o)?;
        }
        while left > 0 {
            let Some(r) = reader.next_record()? else {
                break;
            };
            serde_json::to_writer(&mut out, &line(&args.topic, p, &r))
                .map_err(|e| out_err(e.into()))?;
            out.write_all(b"\n").map_err(out_err)?;
            left -= 1;
        }
    }
    out.flush().map_err(out_err)
}
