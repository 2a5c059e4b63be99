//! Where a backup's bytes live: one small synchronous interface over a local directory or an
//! object store (S3 and S3-compatible servers, Google Cloud Storage, Azure Blob Storage).
//!
//! Objects cannot be appended to or renamed, so the interface only offers what both kinds of
//! storage can do atomically: write a whole object, create one only if absent (the guard that
//! makes a stale writer lose), stream a large object in parts that becomes visible only when
//! complete, and read, list, head and delete. Keys are relative, `/`-separated
//! (`topics/orders/0/00000000000000000000.segment`); a [`LocalStore`] maps them to the same
//! files as today's layout.
//!
//! Not wired yet: the sink, the restore and the CLI still use the file system directly
//! (docs/storage.md says what moves here next).

mod local;
mod object;

pub use local::LocalStore;
pub use object::ObjectStore;

use crate::error::{Error, Result};
use crate::perms::Perms;
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// What a store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key, relative to the store's root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written.
    pub modified: SystemTime,
}

/// A backup's storage: a local directory or a bucket prefix.
///
/// Every method is synchronous. An [`ObjectStore`] runs its requests on a runtime it owns and
/// blocks the calling thread until they finish, so no method may be called from inside an
/// async runtime (it fails with [`Error::State`] instead of deadlocking).
pub trait Store: Send + Sync + fmt::Debug {
    /// The store's root as a URL or path, for messages (`s3://bucket/prefix`, `/backups/x`).
    fn location(&self) -> String;

    /// The full location of `key`, for messages.
    fn describe(&self, key: &str) -> String {
        format!("{}/{}", self.location().trim_end_matches('/'), key)
    }

    /// Writes a whole object, replacing any object under `key`. Readers see the old object or
    /// the new one, never a part of it.
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;

    /// Creates the object only if nothing exists under `key`, atomically: of two writers racing
    /// for one key exactly one succeeds. The loser gets the conflict error
    /// ([`is_conflict`] is true for it), which means another writer got there first.
    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<()>;

    /// Starts streaming a large object. Memory is bounded by the part size; nothing is visible
    /// under `key` until [`PartWriter::complete`] returns; an error, [`PartWriter::abort`] or
    /// dropping the writer leaves nothing behind. Completing replaces any object under `key`
    /// (names are deterministic, so a re-upload after a crash lands on the same key).
    fn writer(&self, key: &str) -> Result<Box<dyn PartWriter>>;

    /// Like [`Store::writer`], but completing creates the object only if nothing exists under
    /// `key`, atomically, like [`Store::put_if_absent`]: of two writers streaming to one key
    /// exactly one completes, the other gets the conflict error and nothing of it stays
    /// visible. This is what fences a stale writer of a segment.
    ///
    /// On an object store a stream larger than one part is uploaded under a staging key below
    /// [`UPLOADS_PREFIX`] (with a small marker naming the upload, so an upload orphaned by a
    /// crash can be aborted later: [`Store::abort_orphans`]), completed there, and copied to
    /// `key` only if absent; the staging object is deleted after.
    fn writer_new(&self, key: &str) -> Result<Box<dyn PartWriter>>;

    /// Aborts the uploads that [`Store::writer_new`] streams left behind for keys under
    /// `prefix` (their writer crashed, or is a stale writer that must lose), and deletes
    /// their staging objects. Returns how many were cleaned up. A local directory has none.
    fn abort_orphans(&self, prefix: &str) -> Result<usize> {
        let _ = prefix;
        Ok(0)
    }

    /// Reads a whole object ([`Error::NotFound`] if absent).
    fn get(&self, key: &str) -> Result<Vec<u8>>;

    /// Reads bytes `range` of an object. A range reaching past the end returns the bytes up to
    /// the end; a range starting past the end is an error.
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>>;

    /// The object's metadata, or `None` if nothing is stored under `key`.
    fn head(&self, key: &str) -> Result<Option<ObjectMeta>>;

    /// Every complete object under `prefix` (a key prefix ending at a `/` boundary, like a
    /// directory; `""` lists everything), sorted by key. Objects still being written are not
    /// listed.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Deletes an object; deleting an absent object succeeds.
    fn delete(&self, key: &str) -> Result<()>;
}

/// A large object being written in parts ([`Store::writer`]).
pub trait PartWriter: Send {
    /// Appends bytes. On an object store a full part is uploaded before this returns, so at
    /// most one part is held in memory.
    fn write(&mut self, data: &[u8]) -> Result<()>;

    /// Bytes written so far.
    fn written(&self) -> u64;

    /// Makes the object visible under its key, durable when this returns.
    fn complete(self: Box<Self>) -> Result<ObjectMeta>;

    /// Discards what was written; nothing becomes visible. Dropping the writer does the same,
    /// but only this reports a failure to clean up.
    fn abort(self: Box<Self>) -> Result<()>;
}

/// True for the error of a lost conditional create ([`Store::put_if_absent`]): another writer
/// created the object first.
pub fn is_conflict(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists)
}

/// The error a lost [`Store::put_if_absent`] returns.
pub(crate) fn conflict(location: String) -> Error {
    Error::Io {
        path: PathBuf::from(location),
        op: "create (only if absent)",
        source: io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the object already exists: another writer created it first (a task that lost its \
             partitions after a rebalance, or a second backup writing to the same place); this \
             writer must stop and reopen from what is stored",
        ),
    }
}

/// Where an object store keeps the staging objects and upload markers of
/// [`Store::writer_new`] streams: outside `topics/`, so no reader ever lists them as data.
pub const UPLOADS_PREFIX: &str = ".kbackup-uploads";

/// Default part size of a streamed upload: above S3's 5 MiB minimum, small enough that one
/// part per open partition stays cheap.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;

/// S3's smallest allowed part (all parts but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// How an object store retries a failed request (5xx, throttling, timeouts, refused
/// connections): exponential backoff with jitter, bounded both by count and by total time.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySettings {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: usize,
    /// No retry starts after this long from the first attempt.
    pub retry_timeout: Duration,
    /// The first backoff; each next one is up to twice as long.
    pub init_backoff: Duration,
    /// The longest single backoff.
    pub max_backoff: Duration,
    /// Connecting to the endpoint gives up after this long.
    pub connect_timeout: Duration,
    /// One request (not counting retries) gives up after this long.
    pub request_timeout: Duration,
}

impl Default for RetrySettings {
    fn default() -> RetrySettings {
        RetrySettings {
            max_retries: 8,
            retry_timeout: Duration::from_secs(120),
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// Settings for [`open_store`]. Every `None` falls back to the store's standard environment
/// variables (for S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...) and then to the provider's
/// credential chain (profile, instance or workload identity).
#[derive(Clone, Default)]
pub struct StoreOptions {
    /// Region (S3).
    pub region: Option<String>,
    /// Endpoint of an S3-compatible server or emulator (`http://127.0.0.1:7070`).
    pub endpoint: Option<String>,
    /// Virtual-hosted-style requests (`bucket.host`) instead of path-style (`host/bucket`).
    /// Default: path-style (what S3-compatible servers expect; AWS accepts both).
    pub virtual_hosted_style: Option<bool>,
    /// Allow plain `http://` endpoints (off by default).
    pub allow_http: Option<bool>,
    /// Access key id (S3).
    pub access_key_id: Option<String>,
    /// Secret access key (S3). Never printed.
    pub secret_access_key: Option<String>,
    /// Session token for temporary credentials (S3). Never printed.
    pub session_token: Option<String>,
    /// Part size of streamed uploads; at least [`MIN_PART_SIZE`] on object stores.
    pub part_size: Option<usize>,
    /// Retry and timeout policy of an object store.
    pub retry: RetrySettings,
    /// Further `object_store` settings by their documented names (`google_service_account`,
    /// `azure_storage_account_name`, ...), applied last. Values are never printed.
    pub extra: Vec<(String, String)>,
    /// Modes of the files and directories a [`LocalStore`] creates.
    pub perms: Perms,
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |o: &Option<String>| o.as_ref().map(|_| "<hidden>");
        f.debug_struct("StoreOptions")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("part_size", &self.part_size)
            .field("retry", &self.retry)
            .field(
                "extra",
                &self.extra.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("perms", &self.perms)
            .finish()
    }
}

/// The connector keys that configure an object store (docs/storage.md, "Settings and
/// credentials"), each overriding the store's standard environment variable. Secrets are
/// password-type keys in Connect and are never printed.
pub const STORAGE_KEYS: &[(&str, &str)] = &[
    ("storage.region", "bucket region (AWS_REGION)"),
    (
        "storage.endpoint",
        "endpoint of an S3-compatible server (AWS_ENDPOINT_URL)",
    ),
    (
        "storage.virtual.hosted.style",
        "true: bucket.host requests; default path-style",
    ),
    (
        "storage.allow.http",
        "true: allow a plain http:// endpoint (AWS_ALLOW_HTTP)",
    ),
    ("storage.access.key.id", "access key id (AWS_ACCESS_KEY_ID)"),
    (
        "storage.secret.access.key",
        "secret access key (AWS_SECRET_ACCESS_KEY); a password",
    ),
    (
        "storage.session.token",
        "session token of temporary credentials (AWS_SESSION_TOKEN); a password",
    ),
    (
        "storage.part.size.bytes",
        "upload part size, at least 5 MiB (default 8 MiB)",
    ),
    (
        "storage.options",
        "further object_store settings as key=value,key=value (e.g. \
         google_service_account_key, azure_storage_account_key); a password",
    ),
];

/// The `storage.*` settings of a connector, as given (values are text). `Debug` and
/// `Serialize` never show a value: any of them may be a secret.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct StorageSettings(pub std::collections::BTreeMap<String, String>);

impl fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl serde::Serialize for StorageSettings {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.0.keys())
    }
}

impl StorageSettings {
    /// The `storage.*` entries of a connector's properties.
    pub fn from_props<'a>(props: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        StorageSettings(
            props
                .into_iter()
                .filter(|(k, _)| k.starts_with("storage."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    /// The store options these settings give (each unset one falls back to the environment);
    /// an unknown `storage.*` key or a bad value is a config error naming the key and the fix.
    pub fn options(&self) -> Result<StoreOptions> {
        let mut o = StoreOptions::default();
        let bool_of = |k: &str, v: &str| match v.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(Error::Config(format!(
                "{k} is {v:?}; set it to true or false"
            ))),
        };
        for (k, v) in &self.0 {
            let text = || Some(v.trim().to_string()).filter(|t| !t.is_empty());
            match k.as_str() {
                "storage.region" => o.region = text(),
                "storage.endpoint" => o.endpoint = text(),
                "storage.virtual.hosted.style" => o.virtual_hosted_style = Some(bool_of(k, v)?),
                "storage.allow.http" => o.allow_http = Some(bool_of(k, v)?),
                "storage.access.key.id" => o.access_key_id = text(),
                "storage.secret.access.key" => o.secret_access_key = text(),
                "storage.session.token" => o.session_token = text(),
                "storage.part.size.bytes" => {
                    let n = v.trim().parse::<usize>().map_err(|_| {
                        Error::Config(format!(
                            "{k} is {v:?}; set it to a number of bytes, at least {MIN_PART_SIZE}"
                        ))
                    })?;
                    o.part_size = Some(n);
                }
                "storage.options" => {
                    for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        let Some((name, value)) = pair.split_once('=') else {
                            return Err(Error::Config(format!(
                                "{k} holds an entry without `=` (its value is not shown: it \
                                 may be a secret); write it as key=value,key=value"
                            )));
                        };
                        o.extra
                            .push((name.trim().to_string(), value.trim().to_string()));
                    }
                }
                _ => {
                    let known: Vec<&str> = STORAGE_KEYS.iter().map(|(k, _)| *k).collect();
                    return Err(Error::Config(format!(
                        "unknown setting {k}; the storage settings are {}",
                        known.join(", ")
                    )));
                }
            }
        }
        Ok(o)
    }
}

/// The URL schemes [`open_store`] accepts, for messages.
pub const SUPPORTED: &str = "a local path, file:///path, s3://bucket/prefix, \
     gs://bucket/prefix or az://container/prefix";

/// What a location string names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Local(PathBuf),
    Cloud {
        scheme: Scheme,
        bucket: String,
        prefix: String,
    },
}

/// The object stores kbackup speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    S3,
    Gcs,
    Azure,
}

impl Scheme {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scheme::S3 => "s3",
            Scheme::Gcs => "gs",
            Scheme::Azure => "az",
        }
    }
}

/// Schemes that, followed by `:` but not `://`, are a mistyped URL rather than a file name.
const URL_LIKE: &[&str] = &[
    "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "file", "http", "https", "ftp", "hdfs",
];

/// Parses a backup location: a plain path, `file://`, or an object-store URL. Anything that
/// looks like a URL with another scheme is an error, never a local directory of that name.
pub(crate) fn parse_location(location: &str) -> Result<Target> {
    let unsupported = |why: &str| {
        Error::Config(format!(
            "unsupported backup location {location:?}: {why}; use {SUPPORTED}"
        ))
    };
    if location.trim().is_empty() {
        return Err(unsupported("it is empty"));
    }
    let Some((scheme, rest)) = location.split_once("://") else {
        // `s3:/bucket` or `s3:bucket` is a mistyped URL, not a directory named `s3:`
        let first = location.split('/').next().unwrap_or("");
        if let Some((s, _)) = first.split_once(':') {
            let s = s.to_ascii_lowercase();
            let schemeish = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
            if schemeish && (first.ends_with(':') || URL_LIKE.contains(&s.as_str())) {
                return Err(unsupported("it looks like a URL without `://`"));
            }
        }
        return Ok(Target::Local(PathBuf::from(location)));
    };
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "file" => {
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(unsupported(
                    "a file:// URL needs an absolute path on this host (file:///path)",
                ));
            }
            return Ok(Target::Local(PathBuf::from(path)));
        }
        "s3" => Scheme::S3,
        "gs" => Scheme::Gcs,
        "az" => Scheme::Azure,
        other => {
            return Err(unsupported(&format!(
                "the scheme `{other}` is not supported"
            )))
        }
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(unsupported("the URL names no bucket"));
    }
    let prefix = prefix.trim_matches('/').to_string();
    if !prefix.is_empty() {
        check_key(&prefix).map_err(|_| unsupported("its prefix is not a clean path"))?;
    }
    Ok(Target::Cloud {
        scheme,
        bucket: bucket.to_string(),
        prefix,
    })
}

/// The local directory behind a location, for every part that keeps backups only in a local
/// directory so far (all but the storage layer itself, see docs/storage.md): a plain path or a
/// `file://` URL. An object-store URL, another scheme or a mistyped URL is an error naming the
/// fix (the message, for the caller to attach to its setting), never a local directory named
/// `s3:` that a backup would silently fill.
pub fn local_dir(location: &str) -> std::result::Result<PathBuf, String> {
    match parse_location(location) {
        Ok(Target::Local(path)) => Ok(path),
        Ok(Target::Cloud { scheme, .. }) => Err(format!(
            "backup location {location:?} is in object storage ({}://), but this release keeps \
             backups only in a local directory (a plain path or file:///path); back up to a \
             directory, e.g. a volume every Connect worker mounts, and copy it to the bucket \
             with the store's own tools",
            scheme.as_str()
        )),
        Err(Error::Config(why)) => Err(why),
        Err(e) => Err(e.to_string()),
    }
}

/// Checks a location the way [`open_store`] will read it (for argument parsers): the error is
/// the message naming the supported forms.
pub fn check_location(location: &str) -> std::result::Result<String, String> {
    match parse_location(location) {
        Ok(_) => Ok(location.to_string()),
        Err(Error::Config(why)) => Err(why),
        Err(e) => Err(e.to_string()),
    }
}

/// Opens the store behind a location: a plain path or `file://` URL gives a [`LocalStore`];
/// `s3://`, `gs://` and `az://` give an [`ObjectStore`] configured from `options` and the
/// environment. Opening does not contact the store (see docs/storage.md).
pub fn open_store(location: &str, options: &StoreOptions) -> Result<Box<dyn Store>> {
    match parse_location(location)? {
        Target::Local(path) => Ok(Box::new(LocalStore::new(path, options.perms))),
        Target::Cloud {
            scheme,
            bucket,
            prefix,
        } => Ok(Box::new(ObjectStore::open(
            scheme, &bucket, &prefix, options,
        )?)),
    }
}

/// For a connector's `validate()`: `Ok(false)` when `location` is a local directory (checked
/// by the caller as one); for an object-store location, checks now that the bucket answers
/// with these credentials, and with `write` that an object can be put and deleted there (a
/// probe under [`UPLOADS_PREFIX`]), then `Ok(true)`. Retries are few and short, so an
/// unreachable endpoint is reported within seconds. The errors name the problem and the fix.
pub fn check_reachable(location: &str, settings: &StorageSettings, write: bool) -> Result<bool> {
    if let Target::Local(_) = parse_location(location)? {
        return Ok(false);
    }
    let options = StoreOptions {
        retry: RetrySettings {
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            ..RetrySettings::default()
        },
        ..settings.options()?
    };
    let store = open_store(location, &options)?;
    if write {
        let probe = format!(
            "{UPLOADS_PREFIX}/validate-probe-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        store.put(&probe, b"")?;
        store.delete(&probe)?;
    } else {
        store.head(crate::layout::ROOT_MARKER)?;
    }
    Ok(true)
}

/// Checks that `key` is a clean relative key: `/`-separated, no empty, `.` or `..` segment,
/// no leading or trailing `/`, no NUL, and not a name the stores use for their own files.
pub(crate) fn check_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.contains('\0')
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == ".." || s.contains(local::TMP_MARK));
    if bad {
        return Err(Error::State(format!(
            "invalid storage key {key:?}: keys are relative `/`-separated names without empty, \
             `.` or `..` parts; this is a bug in kbackup, please report it"
        )));
    }
    Ok(())
}

/// Checks a list prefix: empty, or a clean key (a trailing `/` is allowed).
pub(crate) fn check_prefix(prefix: &str) -> Result<()> {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        Ok(())
    } else {
        check_key(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_and_file_urls_are_local() {
        assert_eq!(
            parse_location("/b/x").unwrap(),
            Target::Local("/b/x".into())
        );
        assert_eq!(
            parse_location("rel/dir").unwrap(),
            Target::Local("rel/dir".into())
        );
        assert_eq!(
            parse_location("file:///b/x").unwrap(),
            Target::Local("/b/x".into())
        );
        assert_eq!(
            parse_location("file://localhost/b").unwrap(),
            Target::Local("/b".into())
        );
        assert!(parse_location("file://host/b").is_err());
    }

    #[test]
    fn local_dir_takes_paths_and_file_urls_and_refuses_object_store_urls() {
        assert_eq!(local_dir("rel/dir").unwrap(), PathBuf::from("rel/dir"));
        assert_eq!(local_dir("file:///b/x").unwrap(), PathBuf::from("/b/x"));
        for url in ["s3://bucket/p", "gs://bucket", "az://container/p"] {
            let e = local_dir(url).unwrap_err();
            assert!(e.contains("only in a local directory"), "{url}: {e}");
        }
        for bad in ["s3:bucket", "ftp://host/x", ""] {
            assert!(local_dir(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cloud_urls_split_bucket_and_prefix() {
        assert_eq!(
            parse_location("s3://bk/a/b/").unwrap(),
            Target::Cloud {
                scheme: Scheme::S3,
                bucket: "bk".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            parse_location("gs://bk").unwrap(),
            Target::Cloud {
                scheme: Scheme::Gcs,
                bucket: "bk".into(),
                prefix: "".into()
            }
        );
        assert!(matches!(
            parse_location("az://c/p").unwrap(),
            Target::Cloud {
                scheme: Scheme::Azure,
                ..
            }
        ));
        assert!(parse_location("s3:///p").is_err());
        assert!(parse_location("s3://b/a/../c").is_err());
    }

    #[test]
    fn unsupported_schemes_are_errors_naming_the_supported_ones() {
        for bad in [
            "http://h/x",
            "ftp://h/x",
            "s4://b/x",
            "s3:/b/x",
            "s3:b",
            "",
            "hdfs://n/p",
        ] {
            let e = parse_location(bad).expect_err(bad).to_string();
            assert!(
                e.contains("s3://bucket/prefix") && e.contains("file:///path"),
                "{e}"
            );
        }
    }

    #[test]
    fn keys_must_be_clean() {
        for bad in ["", "/a", "a/", "a//b", "a/./b", "../a", "a\0b"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        check_key("topics/t/0/00000000000000000000.segment").unwrap();
        check_prefix("").unwrap();
        check_prefix("topics/").unwrap();
    }

    #[test]
    fn storage_settings_map_to_options_and_never_show_values() {
        let props: std::collections::BTreeMap<String, String> = [
            ("storage.region", "eu-west-1"),
            ("storage.endpoint", "http://127.0.0.1:7070"),
            ("storage.allow.http", "TRUE"),
            ("storage.secret.access.key", "s3cr3t-value"),
            (
                "storage.options",
                "aws_sse_kms_key_id=k3y-id, google_service_account_key=x=y",
            ),
            ("storage.part.size.bytes", "6291456"),
            ("target.dir", "s3://b/p"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = StorageSettings::from_props(&props);
        assert_eq!(s.0.len(), 6, "only storage.* keys");
        let o = s.options().unwrap();
        assert_eq!(o.region.as_deref(), Some("eu-west-1"));
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:7070"));
        assert_eq!(o.allow_http, Some(true));
        assert_eq!(o.secret_access_key.as_deref(), Some("s3cr3t-value"));
        assert_eq!(o.part_size, Some(6291456));
        assert_eq!(
            o.extra,
            vec![
                ("aws_sse_kms_key_id".into(), "k3y-id".into()),
                ("google_service_account_key".into(), "x=y".into())
            ]
        );
        for shown in [format!("{s:?}"), serde_json::to_string(&s).unwrap()] {
            assert!(
                !shown.contains("s3cr3t") && !shown.contains("k3y-id"),
                "{shown}"
            );
        }
        let bad = |k: &str, v: &str| {
            StorageSettings([(k.to_string(), v.to_string())].into())
                .options()
                .unwrap_err()
                .to_string()
        };
        assert!(bad("storage.allow.http", "yes").contains("true or false"));
        assert!(bad("storage.regoin", "x").contains("storage.region"));
        let e = bad("storage.options", "s3cr3t");
        assert!(e.contains("key=value") && !e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn options_debug_hides_secrets() {
        let o = StoreOptions {
            secret_access_key: Some("s3cr3t".into()),
            session_token: Some("t0k3n".into()),
            extra: vec![("azure_storage_account_key".into(), "k3y".into())],
            ..Default::default()
        };
        let d = format!("{o:?}");
        assert!(
            !d.contains("s3cr3t") && !d.contains("t0k3n") && !d.contains("k3y"),
            "{d}"
        );
    }
}
