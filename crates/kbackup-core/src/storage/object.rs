//! [`ObjectStore`]: a backup under a bucket prefix, through the `object_store` crate.
//!
//! The core is synchronous, `object_store` is async: the store owns a small tokio runtime (two
//! worker threads named `kbackup-store`) and every method blocks the calling thread on it with
//! `Runtime::block_on`. Calling from a thread that is itself inside a tokio runtime would
//! deadlock or panic, so every entry checks for that and fails with [`Error::State`] instead.
//! Requests are retried by `object_store` (5xx, throttling, timeouts, refused connections) with
//! the bounded backoff of [`RetrySettings`].

use super::{
    check_key, check_prefix, conflict, ObjectMeta, PartWriter, RetrySettings, Scheme, Store,
    StoreOptions, DEFAULT_PART_SIZE, MIN_PART_SIZE, UPLOADS_PREFIX,
};
use crate::error::{Error, Result};
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3CopyIfNotExists};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjPath;
use object_store::{
    BackoffConfig, MultipartId, ObjectStore as _, ObjectStoreExt as _, PutMode, PutOptions,
    PutPayload, RetryConfig,
};
use std::fmt;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::runtime::Runtime;

/// A store over a bucket (or container) prefix on S3, an S3-compatible server, GCS or Azure.
pub struct ObjectStore {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn object_store::ObjectStore>,
    /// The same client, for uploads whose id must be known (to abort them after a crash).
    multipart: Arc<dyn MultipartStore>,
    runtime: Runtime,
    /// `s3://bucket/prefix`, for messages.
    url: String,
    /// Where requests go, for messages.
    endpoint: String,
    bucket: String,
    prefix: String,
    part_size: usize,
    retry: RetrySettings,
}

impl fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // not the object_store client: its configuration may hold credentials
        f.debug_struct("ObjectStore")
            .field("url", &self.inner.url)
            .field("endpoint", &self.inner.endpoint)
            .field("part_size", &self.inner.part_size)
            .finish()
    }
}

fn retry_config(r: &RetrySettings) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: r.init_backoff,
            max_backoff: r.max_backoff,
            base: 2.0,
        },
        max_retries: r.max_retries,
        retry_timeout: r.retry_timeout,
    }
}

fn secs(d: std::time::Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

fn config_error(url: &str, e: impl fmt::Display) -> Error {
    Error::Config(format!(
        "cannot use {url}: {e}; check the URL and the store settings (docs/storage.md)"
    ))
}

impl ObjectStore {
    fn part_writer(&self, key: &str, only_new: bool) -> Result<Box<dyn PartWriter>> {
        let path = self.inner.path(key)?;
        Ok(Box::new(StreamWriter {
            inner: self.inner.clone(),
            key: key.to_string(),
            path,
            only_new,
            buf: Vec::new(),
            upload: None,
            written: 0,
            failed: false,
            done: false,
        }))
    }

    /// Opens `scheme://bucket/prefix` with `options`, each unset one taken from the standard
    /// environment of that store. Contacts nothing yet.
    pub(crate) fn open(
        scheme: Scheme,
        bucket: &str,
        prefix: &str,
        options: &StoreOptions,
    ) -> Result<ObjectStore> {
        let url = if prefix.is_empty() {
            format!("{}://{bucket}", scheme.as_str())
        } else {
            format!("{}://{bucket}/{prefix}", scheme.as_str())
        };
        let part_size = options.part_size.unwrap_or(DEFAULT_PART_SIZE);
        if part_size < MIN_PART_SIZE {
            return Err(Error::Config(format!(
                "part size {part_size} for {url} is below the {MIN_PART_SIZE} bytes (5 MiB) \
                 object stores require for all parts but the last; raise it"
            )));
        }
        let retry = retry_config(&options.retry);
        let timeouts = [
            ("connect_timeout", secs(options.retry.connect_timeout)),
            ("timeout", secs(options.retry.request_timeout)),
        ];
        type Stores = (
            Arc<dyn object_store::ObjectStore>,
            Arc<dyn MultipartStore>,
            String,
        );
        fn both<S: object_store::ObjectStore + MultipartStore>(s: S, endpoint: String) -> Stores {
            let s = Arc::new(s);
            (s.clone(), s, endpoint)
        }
        let (store, multipart, endpoint): Stores = match scheme {
            Scheme::S3 => {
                let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(v) = &options.region {
                    b = b.with_region(v);
                }
                if let Some(v) = &options.endpoint {
                    b = b.with_endpoint(v);
                }
                if let Some(v) = options.virtual_hosted_style {
                    b = b.with_virtual_hosted_style_request(v);
                }
                if let Some(v) = options.allow_http {
                    b = b.with_allow_http(v);
                }
                if let Some(v) = &options.access_key_id {
                    b = b.with_access_key_id(v);
                }
                if let Some(v) = &options.secret_access_key {
                    b = b.with_secret_access_key(v);
                }
                if let Some(v) = &options.session_token {
                    b = b.with_token(v);
                }
                for (k, v) in timeouts.iter().map(|(k, v)| (*k, v.as_str())) {
                    b = b.with_config(k.parse().map_err(|e| config_error(&url, e))?, v);
                }
                // A conditional copy for Store::writer_new: a multipart copy completed with
                // If-None-Match (AWS S3 since 2024, versitygw); a setting in `extra` wins.
                b = b.with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
                for (k, v) in &options.extra {
                    let key: AmazonS3ConfigKey = k.parse().map_err(|e| config_error(&url, e))?;
                    b = b.with_config(key, v);
                }
                let endpoint = b
                    .get_config_value(&AmazonS3ConfigKey::Endpoint)
                    .unwrap_or_else(|| {
                        let region = b
                            .get_config_value(&AmazonS3ConfigKey::Region)
                            .unwrap_or_else(|| "us-east-1".into());
                        format!("AWS S3 in {region}")
                    });
                let s = b
                    .with_retry(retry)
                    .build()
                    .map_err(|e| config_error(&url, e))?;
                both(s, endpoint)
            }
            Scheme::Gcs => {
                let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
                for (k, v) in timeouts.iter().map(|(k, v)| (*k, v.as_str())) {
                    b = b.with_config(k.parse().map_err(|e| config_error(&url, e))?, v);
                }
                for (k, v) in &options.extra {
                    let key: GoogleConfigKey = k.parse().map_err(|e| config_error(&url, e))?;
                    b = b.with_config(key, v);
                }
                let s = b
                    .with_retry(retry)
                    .build()
                    .map_err(|e| config_error(&url, e))?;
                both(s, "Google Cloud Storage".into())
            }
            Scheme::Azure => {
                let mut b = MicrosoftAzureBuilder::from_env().with_container_name(bucket);
                for (k, v) in timeouts.iter().map(|(k, v)| (*k, v.as_str())) {
                    b = b.with_config(k.parse().map_err(|e| config_error(&url, e))?, v);
                }
                for (k, v) in &options.extra {
                    let key: AzureConfigKey = k.parse().map_err(|e| config_error(&url, e))?;
                    b = b.with_config(key, v);
                }
                let s = b
                    .with_retry(retry)
                    .build()
                    .map_err(|e| config_error(&url, e))?;
                both(s, "Azure Blob Storage".into())
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kbackup-store")
            .enable_all()
            .build()
            .map_err(|e| Error::io(e, "start the object store's runtime for", &url))?;
        Ok(ObjectStore {
            inner: Arc::new(Inner {
                store,
                multipart,
                runtime,
                url,
                endpoint,
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                part_size,
                retry: options.retry.clone(),
            }),
        })
    }

    /// The part size of streamed uploads.
    pub fn part_size(&self) -> usize {
        self.inner.part_size
    }
}

impl Inner {
    fn path(&self, key: &str) -> Result<ObjPath> {
        check_key(key)?;
        Ok(self.full(key))
    }

    fn full(&self, key: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(key)
        } else {
            ObjPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn describe(&self, key: &str) -> String {
        format!("{}/{key}", self.url)
    }

    /// Runs `f` to completion on the store's runtime, from a thread outside any runtime.
    fn block_on<F: Future>(&self, what: &str, f: F) -> Result<F::Output> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::State(format!(
                "{what} on {} was called from inside an async runtime, where blocking would \
                 stall it; call the storage layer from a plain thread (this is a bug in \
                 kbackup, please report it)",
                self.url
            )));
        }
        Ok(self.runtime.block_on(f))
    }

    /// Maps an `object_store` error to the core's, naming the problem and the fix.
    fn error(&self, e: object_store::Error, op: &'static str, key: &str) -> Error {
        let at = self.describe(key);
        let detail = chain(&e);
        if detail.contains("NoSuchBucket") || detail.contains("ContainerNotFound") {
            return Error::NotFound(format!(
                "bucket `{}` does not exist at {}: create it, or fix the bucket in {} or the \
                 endpoint/region settings ({detail})",
                self.bucket, self.endpoint, self.url
            ));
        }
        let io_error = |kind: io::ErrorKind, msg: String| Error::Io {
            path: PathBuf::from(&at),
            op,
            source: io::Error::new(kind, msg),
        };
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound(format!("{at} does not exist")),
            object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. } => conflict(at),
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => io_error(
                io::ErrorKind::PermissionDenied,
                format!(
                    "access denied by {}: {detail}; check the credentials (AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY, a profile, or the instance/workload identity) and \
                     that they may get, put, list and delete objects under {}",
                    self.endpoint, self.url
                ),
            ),
            object_store::Error::NotImplemented { .. } => io_error(
                io::ErrorKind::Unsupported,
                format!(
                    "{detail}; this store does not support what kbackup needs here (conditional \
                     writes are required: AWS S3, GCS, Azure and versitygw support them)"
                ),
            ),
            _ if unreachable(&detail) => io_error(
                io::ErrorKind::TimedOut,
                format!(
                    "could not reach the object store at {} (gave up after at most {} retries \
                     within {:?}): {detail}; check the endpoint (AWS_ENDPOINT_URL or the \
                     endpoint setting), the region, the network and that the server is up",
                    self.endpoint, self.retry.max_retries, self.retry.retry_timeout
                ),
            ),
            _ => io_error(io::ErrorKind::Other, detail),
        }
    }
}

/// The error and every source below it, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// True when the request never got an answer (refused, reset, timed out, DNS) or the server
/// kept failing with 5xx: trying again later may work.
fn unreachable(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    [
        "error sending request",
        "connection refused",
        "connection reset",
        "tcp connect",
        "dns error",
        "timed out",
        "timeout",
        "server returned non-2xx status code: 5",
        "status code: 5",
    ]
    .iter()
    .any(|p| d.contains(p))
}

impl Store for ObjectStore {
    fn location(&self) -> String {
        self.inner.url.clone()
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let i = &self.inner;
        let path = i.path(key)?;
        let payload = PutPayload::from(bytes::Bytes::copy_from_slice(data));
        i.block_on("put", i.store.put(&path, payload))?
            .map_err(|e| i.error(e, "put", key))?;
        Ok(())
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<()> {
        let i = &self.inner;
        let path = i.path(key)?;
        let payload = PutPayload::from(bytes::Bytes::copy_from_slice(data));
        let opts = PutOptions::from(PutMode::Create);
        i.block_on("put_if_absent", i.store.put_opts(&path, payload, opts))?
            .map_err(|e| i.error(e, "create (only if absent)", key))?;
        Ok(())
    }

    fn writer(&self, key: &str) -> Result<Box<dyn PartWriter>> {
        self.part_writer(key, false)
    }

    fn writer_new(&self, key: &str) -> Result<Box<dyn PartWriter>> {
        self.part_writer(key, true)
    }

    fn abort_orphans(&self, prefix: &str) -> Result<usize> {
        let i = &self.inner;
        check_prefix(prefix)?;
        let under = format!("{UPLOADS_PREFIX}/{}", prefix.trim_end_matches('/'));
        let listed = self.list(under.trim_end_matches('/'))?;
        let mut cleaned = 0;
        for m in &listed {
            if let Some(staging) = m.key.strip_suffix(UPLOAD_MARKER) {
                let id = String::from_utf8_lossy(&self.get(&m.key)?)
                    .trim()
                    .to_string();
                let path = i.path(staging)?;
                let aborted =
                    i.block_on("abort upload", i.multipart.abort_multipart(&path, &id))?;
                match aborted {
                    Ok(()) => {}
                    // already completed or aborted (NoSuchUpload): nothing left to abort
                    Err(e) if chain(&e).contains("NoSuchUpload") => {}
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(i.error(e, "abort upload of", staging)),
                }
                log::info!(
                    "aborted the upload of {} left by a writer that crashed or lost its partition",
                    i.describe(staging)
                );
                cleaned += 1;
            }
            // the marker, and a staging object completed but never copied into place
            self.delete(&m.key)?;
        }
        Ok(cleaned)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let i = &self.inner;
        let path = i.path(key)?;
        let bytes = i.block_on("get", async {
            let r = i.store.get(&path).await?;
            r.bytes().await
        })?;
        Ok(bytes.map_err(|e| i.error(e, "read", key))?.to_vec())
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let i = &self.inner;
        let path = i.path(key)?;
        if range.start >= range.end {
            // an empty read still has to fail on a missing object or a start past the end
            let m = self
                .head(key)?
                .ok_or_else(|| Error::NotFound(format!("{} does not exist", i.describe(key))))?;
            if range.start > m.size || range.start > range.end {
                return Err(past_end(&i.describe(key), &range, m.size));
            }
            return Ok(Vec::new());
        }
        let got = i.block_on("get_range", i.store.get_range(&path, range.clone()))?;
        match got {
            Ok(b) => Ok(b.to_vec()),
            // a range past the end is answered 416 or rejected by object_store's own check
            Err(e) if !matches!(e, object_store::Error::NotFound { .. }) => {
                match self.head(key)? {
                    Some(m) if range.start <= m.size => {
                        if range.start == m.size {
                            return Ok(Vec::new());
                        }
                        let r = range.start..m.size;
                        let b = i
                            .block_on("get_range", i.store.get_range(&path, r))?
                            .map_err(|e| i.error(e, "read", key))?;
                        Ok(b.to_vec())
                    }
                    Some(m) => Err(past_end(&i.describe(key), &range, m.size)),
                    None => Err(i.error(e, "read", key)),
                }
            }
            Err(e) => Err(i.error(e, "read", key)),
        }
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let i = &self.inner;
        let path = i.path(key)?;
        match i.block_on("head", i.store.head(&path))? {
            Ok(m) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: m.size,
                modified: m.last_modified.into(),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(i.error(e, "head", key)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let i = &self.inner;
        check_prefix(prefix)?;
        let prefix = prefix.trim_end_matches('/');
        let root = match (i.prefix.is_empty(), prefix.is_empty()) {
            (true, true) => None,
            (false, true) => Some(ObjPath::from(i.prefix.as_str())),
            _ => Some(i.full(prefix)),
        };
        let strip = if i.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", i.prefix)
        };
        let listed = i.block_on("list", async {
            i.store.list(root.as_ref()).try_collect::<Vec<_>>().await
        })?;
        let listed = listed.map_err(|e| i.error(e, "list", prefix))?;
        let mut out: Vec<ObjectMeta> = listed
            .into_iter()
            .filter_map(|m| {
                let key = m
                    .location
                    .as_ref()
                    .strip_prefix(strip.as_str())?
                    .to_string();
                Some(ObjectMeta {
                    key,
                    size: m.size,
                    modified: m.last_modified.into(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let i = &self.inner;
        let path = i.path(key)?;
        match i.block_on("delete", i.store.delete(&path))? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(i.error(e, "delete", key)),
        }
    }
}

/// Moves what fits of `data` into `buf`, a buffer of at most one `part`, and returns the rest.
/// The buffer grows by doubling but never past one part: the memory bound of a streamed object
/// (a small object never costs a whole part).
fn fill_part<'a>(buf: &mut Vec<u8>, part: usize, data: &'a [u8]) -> &'a [u8] {
    let take = (part - buf.len()).min(data.len());
    if buf.capacity() < buf.len() + take {
        let want = (buf.capacity() * 2).max(buf.len() + take).min(part);
        buf.reserve_exact(want - buf.len());
    }
    buf.extend_from_slice(&data[..take]);
    &data[take..]
}

fn past_end(at: &str, range: &Range<u64>, size: u64) -> Error {
    Error::State(format!(
        "read of bytes {range:?} of {at} ({size} bytes) starts past its end; this is a bug in \
         kbackup, please report it"
    ))
}

/// Suffix of the marker object naming the upload id of a staging upload.
const UPLOAD_MARKER: &str = ".upload";

/// A streamed object ([`Store::writer`], [`Store::writer_new`]), buffered up to one part: a
/// stream of one part or less is a single PUT on completion (conditional when `only_new`); a
/// larger one is a multipart upload, started when the first part is full. With `only_new` it
/// is uploaded under a staging key (with a marker naming its id), completed there and copied
/// into place only if absent; otherwise it is uploaded to its key and completed there.
struct StreamWriter {
    inner: Arc<Inner>,
    key: String,
    path: ObjPath,
    only_new: bool,
    buf: Vec<u8>,
    upload: Option<Upload>,
    written: u64,
    failed: bool,
    done: bool,
}

/// The multipart upload of a [`StreamWriter`].
struct Upload {
    /// Where the parts go: the staging key (`only_new`) or the object's own key.
    key: String,
    path: ObjPath,
    /// The staging upload's marker (`only_new` only).
    marker: Option<String>,
    id: MultipartId,
    parts: Vec<PartId>,
    /// Completed into a staging object (which must then be deleted).
    staged: bool,
}

/// A name no other writer uses: process, time and a counter.
fn unique_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl StreamWriter {
    fn err(&self, e: object_store::Error, op: &'static str) -> Error {
        self.inner.error(e, op, &self.key)
    }

    /// Uploads the buffer as the next part, starting the upload (and, for a staging upload,
    /// its marker) first.
    fn flush_part(&mut self) -> Result<()> {
        let i = self.inner.clone();
        if self.upload.is_none() {
            let key = if self.only_new {
                format!("{UPLOADS_PREFIX}/{}.{}", self.key, unique_token())
            } else {
                self.key.clone()
            };
            let path = i.path(&key)?;
            let id = i
                .block_on("start upload", i.multipart.create_multipart(&path))?
                .map_err(|e| self.err(e, "start upload of"))?;
            let marker = self.only_new.then(|| format!("{key}{UPLOAD_MARKER}"));
            self.upload = Some(Upload {
                key,
                path,
                marker: marker.clone(),
                id: id.clone(),
                parts: Vec::new(),
                staged: false,
            });
            if let Some(marker) = marker {
                let mpath = i.path(&marker)?;
                let payload = PutPayload::from(id.into_bytes());
                i.block_on("put", i.store.put(&mpath, payload))?
                    .map_err(|e| i.error(e, "put", &marker))?;
            }
        }
        let part = PutPayload::from(std::mem::take(&mut self.buf));
        let up = self.upload.as_mut().expect("started above");
        let idx = up.parts.len();
        let id = i
            .block_on(
                "upload part",
                i.multipart.put_part(&up.path, &up.id, idx, part),
            )?
            .map_err(|e| i.error(e, "upload part of", &self.key))?;
        up.parts.push(id);
        Ok(())
    }

    fn fail(&mut self, e: Error) -> Error {
        self.failed = true;
        self.buf = Vec::new();
        if let Some(e2) = self.clean_up() {
            log::warn!("{e2}");
        }
        e
    }

    /// Aborts the upload (or deletes a completed staging object) and its marker; the first
    /// error, if any (a staging upload is then cleaned by [`Store::abort_orphans`], another
    /// by the bucket's lifecycle rule for incomplete uploads).
    fn clean_up(&mut self) -> Option<Error> {
        let up = self.upload.take()?;
        let i = self.inner.clone();
        if tokio::runtime::Handle::try_current().is_ok() {
            // dropped inside a runtime: cannot block; abort in the background
            i.runtime.spawn({
                let i = i.clone();
                async move {
                    let _ = i.multipart.abort_multipart(&up.path, &up.id).await;
                }
            });
            return None;
        }
        let mut first = None;
        let mut note = |r: std::result::Result<(), object_store::Error>, what: &'static str, k| {
            if let Err(e) = r {
                if !matches!(e, object_store::Error::NotFound { .. }) && first.is_none() {
                    first = Some(i.error(e, what, k));
                }
            }
        };
        let r = if up.staged {
            i.runtime.block_on(i.store.delete(&up.path))
        } else {
            i.runtime
                .block_on(i.multipart.abort_multipart(&up.path, &up.id))
        };
        note(r, "clean up the upload of", &up.key);
        if let Some(marker) = &up.marker {
            if let Ok(mpath) = i.path(marker) {
                note(
                    i.runtime.block_on(i.store.delete(&mpath)),
                    "delete upload marker",
                    marker,
                );
            }
        }
        first
    }
}

impl PartWriter for StreamWriter {
    fn write(&mut self, mut data: &[u8]) -> Result<()> {
        if self.failed || self.done {
            return Err(Error::State(format!(
                "write to {} after it failed or finished",
                self.inner.describe(&self.key)
            )));
        }
        let part = self.inner.part_size;
        while !data.is_empty() {
            let rest = fill_part(&mut self.buf, part, data);
            self.written += (data.len() - rest.len()) as u64;
            data = rest;
            if self.buf.len() == part {
                if let Err(e) = self.flush_part() {
                    return Err(self.fail(e));
                }
            }
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn complete(mut self: Box<Self>) -> Result<ObjectMeta> {
        if self.failed || self.done {
            return Err(Error::State(format!(
                "complete of {} after it failed or finished",
                self.inner.describe(&self.key)
            )));
        }
        let i = self.inner.clone();
        if self.upload.is_none() {
            let payload = PutPayload::from(std::mem::take(&mut self.buf));
            let mode = if self.only_new {
                PutMode::Create
            } else {
                PutMode::Overwrite
            };
            let r = i.block_on("put", i.store.put_opts(&self.path, payload, mode.into()))?;
            if let Err(e) = r {
                let e = self.err(e, "put");
                return Err(self.fail(e));
            }
        } else {
            if !self.buf.is_empty() {
                if let Err(e) = self.flush_part() {
                    return Err(self.fail(e));
                }
            }
            let up = self.upload.as_mut().expect("checked above");
            let parts = std::mem::take(&mut up.parts);
            let r = i.block_on(
                "complete upload",
                i.multipart.complete_multipart(&up.path, &up.id, parts),
            )?;
            if let Err(e) = r {
                let e = i.error(e, "complete upload of", &up.key);
                return Err(self.fail(e));
            }
            if self.only_new {
                up.staged = true;
                let from = up.path.clone();
                let r = i.block_on(
                    "copy into place",
                    i.store.copy_if_not_exists(&from, &self.path),
                )?;
                if let Err(e) = r {
                    let e = self.err(e, "put");
                    return Err(self.fail(e));
                }
                if let Some(e) = self.clean_up() {
                    log::warn!("{e}; the next writer of this partition removes it");
                }
            } else {
                self.upload = None; // complete: nothing to abort
            }
        }
        self.done = true;
        Ok(ObjectMeta {
            key: self.key.clone(),
            size: self.written,
            modified: std::time::SystemTime::now(),
        })
    }

    fn abort(mut self: Box<Self>) -> Result<()> {
        self.done = true;
        match self.clean_up() {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        if let Some(e) = self.clean_up() {
            log::warn!(
                "{e}; a staged upload is removed by the next writer of the partition, another \
                 by the bucket's lifecycle rule for incomplete uploads"
            );
        }
    }
}
