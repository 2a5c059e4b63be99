//! Progress reporting for the long-running subcommands (backup, restore, verify).
//!
//! People watching a terminal want a bar with rate and ETA; cron jobs and CI logs want a plain
//! line every few seconds that a log file can hold. One type does both, chosen by whether
//! stderr is a terminal, so the subcommands only count. Everything goes to stderr: stdout is
//! kept for results (`--json` summaries) that scripts parse.

use super::metrics::MetricsServer;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kbackup_core::{Error, Result};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Seconds between two plain log lines when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);
/// Seconds between two `--json-progress` events.
const EVENT_EVERY: Duration = Duration::from_secs(1);

/// A progress display counting `unit`s (records, bytes) towards an optional total.
pub struct Progress {
    label: String,
    unit: &'static str,
    bar: Option<ProgressBar>,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_log: Instant,
    quiet: bool,
    /// `--json-progress`: one JSON object per line on stdout, every [`EVENT_EVERY`].
    events: bool,
    last_event: Instant,
}

impl Progress {
    /// Starts a display: a bar on a terminal, log lines otherwise; `quiet` shows nothing.
    pub fn new(label: &str, unit: &'static str, total: Option<u64>, quiet: bool) -> Progress {
        let bar = if !quiet && std::io::stderr().is_terminal() {
            let bar = match total {
                Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            };
            let template = if total.is_some() {
                "{prefix:>8} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} {msg} ({per_sec}, ETA {eta})"
            } else {
                "{prefix:>8} [{elapsed_precise}] {spinner} {human_pos} {msg} ({per_sec})"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.set_prefix(label.to_string());
            bar.set_message(unit);
            bar.enable_steady_tick(Duration::from_millis(200));
            Some(bar)
        } else {
            None
        };
        let now = Instant::now();
        Progress {
            label: label.to_string(),
            unit,
            bar,
            total,
            done: 0,
            started: now,
            last_log: now,
            quiet,
            events: false,
            last_event: now,
        }
    }

    /// Also prints `--json-progress` events on stdout (docs/cli.md, "Progress events").
    pub fn with_json_events(mut self, on: bool) -> Progress {
        self.events = on;
        self
    }

    /// `{"event":"progress","verb":..,"unit":..,"done":..,"total":..,"elapsed_seconds":..,
    /// "rate_per_second":..}` as one line on stdout.
    fn emit_event(&mut self) {
        self.last_event = Instant::now();
        let secs = self.elapsed_secs();
        let ev = serde_json::json!({
            "event": "progress",
            "verb": self.label,
            "unit": self.unit,
            "done": self.done,
            "total": self.total,
            "elapsed_seconds": (secs * 1000.0).round() / 1000.0,
            "rate_per_second": (self.done as f64 / secs.max(0.001)).round(),
        });
        // A closed stdout (a script that stopped reading) is not a reason to stop the work.
        let _ = super::print_json_line(&ev);
    }

    /// Counts `n` more units done.
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        if self.events && self.last_event.elapsed() >= EVENT_EVERY {
            self.emit_event();
        }
        if let Some(b) = &self.bar {
            b.inc(n);
        } else if !self.quiet && self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    /// Units done so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Seconds since the display started.
    pub fn elapsed_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Removes the bar and prints one closing line (`summary`) to stderr unless quiet.
    pub fn finish(mut self, summary: &str) {
        if self.events {
            self.emit_event();
        }
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if !self.quiet {
            eprintln!("{}: {summary}", self.label);
        }
    }

    /// `backup: 1200/5000 records (340/s, ETA 11s)`.
    fn line(&self) -> String {
        let secs = self.elapsed_secs().max(0.001);
        let rate = self.done as f64 / secs;
        match self.total {
            Some(t) => {
                let eta = if rate > 0.0 && t > self.done {
                    format!(", ETA {}", human_duration((t - self.done) as f64 / rate))
                } else {
                    String::new()
                };
                format!(
                    "{}: {}/{} {} ({:.0}/s{eta})",
                    self.label, self.done, t, self.unit, rate
                )
            }
            None => format!(
                "{}: {} {} ({:.0}/s)",
                self.label, self.done, self.unit, rate
            ),
        }
    }
}

/// `42s`, `3m07s`, `2h05m`.
pub fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// Formats ms since the epoch as UTC `YYYY-MM-DDTHH:MM:SS.mmmZ` (negative: `-`).
pub fn utc_time(ms: i64) -> String {
    if ms < 0 {
        return "-".to_string();
    }
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        (rem / 60_000) % 60,
        (rem / 1000) % 60,
        rem % 1000
    )
}

/// The front end of a long-running driver (backup, restore): the stop flag SIGINT/SIGTERM set,
/// the progress display (made once the driver knows its total) and the metrics endpoint.
pub struct RunUi {
    label: &'static str,
    unit: &'static str,
    quiet: bool,
    json_events: bool,
    stop: Arc<AtomicBool>,
    progress: Option<Progress>,
    /// `--metrics-addr`: the scrape endpoint, when asked for.
    pub server: Option<MetricsServer>,
}

impl RunUi {
    /// Installs the signal handlers and starts the metrics endpoint (`metrics_addr`).
    pub fn start(
        label: &'static str,
        unit: &'static str,
        quiet: bool,
        json_events: bool,
        metrics_addr: Option<&str>,
        dir: &Path,
    ) -> Result<RunUi> {
        let server = metrics_addr.map(MetricsServer::start).transpose()?;
        // SIGINT/SIGTERM set a flag; the driver stops at a clean point and makes its work
        // durable (a backup flushes; a restore commits or aborts its transaction).
        let stop = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&stop))
                .map_err(|e| Error::io(e, "install a signal handler for", dir))?;
        }
        Ok(RunUi {
            label,
            unit,
            quiet,
            json_events,
            stop,
            progress: None,
            server,
        })
    }

    /// The driver knows how much there is to do: the display starts now.
    pub fn plan(&mut self, total: Option<u64>) {
        self.progress = Some(
            Progress::new(self.label, self.unit, total, self.quiet)
                .with_json_events(self.json_events),
        );
    }

    /// `n` more units done.
    pub fn inc(&mut self, n: u64) {
        if let Some(p) = self.progress.as_mut() {
            p.inc(n);
        }
    }

    /// A signal asked to stop.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The display, to print the summary with (a silent one if the driver never planned).
    pub fn into_progress(self) -> Progress {
        self.progress
            .unwrap_or_else(|| Progress::new(self.label, self.unit, None, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_time_formats_known_instants() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_time(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc_time(-1), "-");
    }

    #[test]
    fn human_duration_picks_units() {
        assert_eq!(human_duration(42.4), "42s");
        assert_eq!(human_duration(187.0), "3m07s");
        assert_eq!(human_duration(7500.0), "2h05m");
    }

    #[test]
    fn plain_line_has_rate_and_eta() {
        let mut p = Progress::new("backup", "records", Some(100), true);
        p.inc(50);
        let l = p.line();
        assert!(l.starts_with("backup: 50/100 records ("), "{l}");
        assert!(l.contains("/s"), "{l}");
    }
}
