//! `kbackup`: the command-line front end of kbackup-core.
//!
//! Thin glue only: clap parses the arguments, one module per subcommand under `cmd/` runs it
//! through the core, and [`exit_code`] turns the outcome into the documented exit status
//! (docs/cli.md). A closed stdout (`kbackup cat ... | head`) is a success, not an error.

mod cmd;

use clap::{Parser, Subcommand};
use kbackup_core::Error;
use std::process::ExitCode;

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: any failure not listed below (I/O, missing backup or topic, ...).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status: bad command line or invalid setting.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the Kafka cluster could not be reached or refused an operation.
pub const EXIT_KAFKA: u8 = 3;
/// Exit status: the backup is damaged (corruption found by a read, `verify` or `reindex`).
pub const EXIT_CORRUPT: u8 = 4;
/// Exit status: `kbackup status` found the backup behind a threshold or incomplete.
pub const EXIT_STALE: u8 = 5;

/// Cold backup and restore for Apache Kafka: topic data and consumer-group offsets.
#[derive(Parser, Debug)]
#[command(
    name = "kbackup",
    version = &*Box::leak(version().into_boxed_str()),
    after_help = "Exit status: 0 ok, 1 failure, 2 usage error, 3 Kafka/connection failure, \
                  4 corrupt backup, 5 backup stale (status). Log detail: -v, -vv or RUST_LOG=debug."
)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Back up topics (and consumer-group offsets) from a cluster into a backup directory.
    Backup(cmd::backup::BackupArgs),
    /// Restore topics (and translated consumer-group offsets) from a backup into a cluster.
    Restore(cmd::restore::RestoreArgs),
    /// Show topics, partitions, offset ranges, record counts, bytes and segments of a backup.
    Inspect(cmd::inspect::InspectArgs),
    /// Print the records of a topic as JSON lines.
    Cat(cmd::cat::CatArgs),
    /// Check every file of a backup: CRCs, headers, names, indexes and the segment chain.
    Verify(cmd::verify::VerifyArgs),
    /// Rebuild missing or stale index files from their segments.
    Reindex(cmd::reindex::ReindexArgs),
    /// Show the consumer-group offsets captured in a backup.
    Offsets(cmd::offsets::OffsetsArgs),
    /// Show what a restore would create and commit, without a cluster.
    RestorePlan(cmd::restore_plan::RestorePlanArgs),
    /// Show how far a restore got, from its state directory.
    RestoreStatus(cmd::restore_status::RestoreStatusArgs),
    /// Drop whole segments older than a given age.
    Prune(cmd::prune::PruneArgs),
    /// Compare a backup with the live cluster: records and time behind, missing partitions.
    Status(cmd::status::StatusArgs),
    /// Copy a backup between a local directory and an object store (s3://, gs://, az://),
    /// checking every record at both ends.
    Copy(cmd::copy::CopyArgs),
}

fn version() -> String {
    format!(
        "{} (backup format {})",
        kbackup_core::VERSION,
        kbackup_core::format::FORMAT_VERSION
    )
}

/// The exit status for a core error.
pub fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Kafka { .. } => EXIT_KAFKA,
        Error::Corrupt { .. } => EXIT_CORRUPT,
        Error::Config(_) => EXIT_USAGE,
        Error::Io { .. } | Error::NotFound(_) | Error::Codec(_) | Error::State(_) => EXIT_FAILURE,
    }
}

fn is_broken_pipe(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        // librdkafka's own lines (kbackup_core::kafka's client context) and rdkafka's only
        // with -v: a failure is ONE error line, which names the fix
        0 => "warn,librdkafka=off,rdkafka=off",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
}

fn run(cli: Cli) -> kbackup_core::Result<u8> {
    match cli.command {
        Command::Backup(a) => cmd::backup::run(&a).map(|_| EXIT_OK),
        Command::Restore(a) => cmd::restore::run(&a).map(|_| EXIT_OK),
        Command::Inspect(a) => cmd::inspect::run(&a).map(|_| EXIT_OK),
        Command::Cat(a) => cmd::cat::run(&a).map(|_| EXIT_OK),
        Command::Verify(a) => {
            cmd::verify::run(&a).map(|ok| if ok { EXIT_OK } else { EXIT_CORRUPT })
        }
        Command::Reindex(a) => {
            cmd::reindex::run(&a).map(|ok| if ok { EXIT_OK } else { EXIT_CORRUPT })
        }
        Command::Offsets(a) => cmd::offsets::run(&a).map(|_| EXIT_OK),
        Command::RestorePlan(a) => cmd::restore_plan::run(&a).map(|_| EXIT_OK),
        Command::RestoreStatus(a) => cmd::restore_status::run(&a).map(|_| EXIT_OK),
        Command::Prune(a) => cmd::prune::run(&a).map(|_| EXIT_OK),
        Command::Copy(a) => cmd::copy::run(&a).map(|_| EXIT_OK),
        Command::Status(a) => {
            cmd::status::run(&a).map(|fresh| if fresh { EXIT_OK } else { EXIT_STALE })
        }
    }
}

/// Raises the soft limit on open files to the hard limit, as the JVM does for a Connect
/// worker: a backup keeps 4 files open per partition it writes (docs/operations.md), so the
/// common soft default of 1,024 would end a backup of some 250 partitions with "Too many open
/// files" although the hard limit allows far more. Returns the soft limit now in force.
fn raise_open_file_limit() -> Option<libc::rlim_t> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the rlimit struct passed to them.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return None;
    }
    if r.rlim_cur < r.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            r = raised;
        }
    }
    Some(r.rlim_cur)
}

fn main() -> ExitCode {
    // clap exits with status 2 on usage errors and 0 for --help/--version.
    let cli = Cli::parse();
    init_logging(cli.verbose);
    if let Some(n) = raise_open_file_limit() {
        log::debug!("open-file limit: {n}");
    }
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("kbackup: error: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn errors_map_to_documented_exit_codes() {
        let kafka = Error::Kafka {
            what: "x".into(),
            retriable: true,
            detail: "y".into(),
        };
        assert_eq!(exit_code(&kafka), 3);
        assert_eq!(exit_code(&Error::corrupt("f", 1, "d")), 4);
        assert_eq!(exit_code(&Error::Config("c".into())), 2);
        assert_eq!(exit_code(&Error::NotFound("n".into())), 1);
        let pipe = Error::io(
            std::io::Error::from(std::io::ErrorKind::BrokenPipe),
            "write",
            "-",
        );
        assert!(is_broken_pipe(&pipe));
    }
}
