//! Remote storage as a plain blob store: get (whole or a byte range), put,
//! create-if-absent, list and delete of named objects. Every remote kind
//! (S3, HTTP/WebDAV, a local directory, memory for tests) is one
//! `ObjectStore` from the object_store crate; no object_store type leaves
//! this file. Calls are blocking: a private tokio runtime drives them, and
//! callers get parallelism by calling from several threads.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};

/// What went wrong talking to a remote, sorted by what the user can do.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("access denied ({0}); check the remote's credentials")]
    Denied(String),
    #[error("cannot reach the remote ({0}); check the URL and that the server is up")]
    Unreachable(String),
    #[error("{0} does not exist on the remote")]
    NotFound(String),
    /// The remote answered with something no honest remote holds: an
    /// object over its format's limit, a short ranged read.
    #[error("the remote is damaged: {0}")]
    Damaged(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, BackendError>;

/// A remote blob store. Paths are relative to the remote's root and use `/`.
pub trait Backend: Send + Sync {
    /// The whole object, or None when there is none. An object larger than
    /// `max` bytes is an error, found before more than `max` bytes are held.
    fn get(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>>;
    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>>;
    /// Writes an object, replacing any (used for content-named objects,
    /// where a replacement has the same bytes).
    fn put(&self, path: &str, bytes: Vec<u8>) -> Result<()>;
    /// Writes an object only if none exists under `path`, atomically as far
    /// as the storage allows. Returns false when one existed.
    fn create(&self, path: &str, bytes: Vec<u8>) -> Result<bool>;
    /// Every object whose path starts with `prefix`, with its size.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>>;
    fn delete(&self, path: &str) -> Result<()>;
}

/// How `create` is made atomic on each kind of storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CreateBy {
    /// A PUT with If-None-Match: * (S3), link(2) (files), or a lock (memory).
    PutIfAbsent,
    /// WebDAV: PUT under a temporary name, then COPY with Overwrite: F.
    CopyIfAbsent,
}

/// Credentials for one remote, from the environment or the credentials file.
#[derive(Clone, Default)]
pub struct Credentials {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub bearer_token: Option<String>,
}

/// Where a remote is and how to reach it (no secrets). The region is the
/// remote's, else the caller's AWS_REGION or AWS_DEFAULT_REGION, else
/// us-east-1.
#[derive(Clone, Debug)]
pub struct Location {
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

pub struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    create_by: CreateBy,
    runtime: tokio::runtime::Runtime,
    /// WebDAV: directories known to exist. The first write into a
    /// directory creates it (MKCOL), and servers refuse concurrent MKCOLs
    /// of one directory (423 Locked), so first writes go one at a time.
    made_dirs: std::sync::Mutex<std::collections::HashSet<String>>,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| BackendError::Other(format!("cannot start the I/O runtime: {e}")))
}

fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(300))
}

/// A few quick retries: a dead endpoint must fail in seconds, and a push
/// or pull that fails is resumed by running it again.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
    }
}

impl ObjectBackend {
    /// Opens the storage a location names. `file://` paths and plain
    /// paths must exist unless `create` is set.
    pub(crate) fn open(loc: &Location, creds: &Credentials, create: bool) -> Result<ObjectBackend> {
        let url = loc.url.as_str();
        let bad = |why: &str| BackendError::Other(format!("bad remote URL {url}: {why}"));
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket name"));
            }
            let plain_http = loc
                .endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http:"));
            let mut b = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_client_options(client_options().with_allow_http(plain_http))
                .with_retry(retry());
            if let Some(e) = &loc.endpoint {
                b = b.with_endpoint(e);
            }
            let region = loc.region.clone().unwrap_or_else(|| "us-east-1".into());
            b = b.with_region(region);
            match (&creds.access_key_id, &creds.secret_access_key) {
                (Some(k), Some(s)) => b = b.with_access_key_id(k).with_secret_access_key(s),
                _ => {
                    return Err(BackendError::Denied(
                        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add them to the credentials file".into(),
                    ))
                }
            }
            if let Some(t) = &creds.session_token {
                b = b.with_token(t);
            }
            let store = b.build().map_err(|e| bad(&e.to_string()))?;
            return ObjectBackend::new(store, prefix, CreateBy::PutIfAbsent);
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            let mut headers = http::HeaderMap::new();
            let auth = match (&creds.bearer_token, &creds.username, &creds.password) {
                (Some(t), _, _) => Some(format!("Bearer {t}")),
                (None, Some(u), p) => {
                    use base64::Engine;
                    let pair = format!("{u}:{}", p.as_deref().unwrap_or(""));
                    Some(format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(pair)
                    ))
                }
                _ => None,
            };
            if let Some(a) = auth {
                let mut v = http::HeaderValue::from_str(&a).map_err(|_| {
                    BackendError::Other(
                        "the HTTP credentials hold characters a header cannot carry".into(),
                    )
                })?;
                v.set_sensitive(true);
                headers.insert(http::header::AUTHORIZATION, v);
            }
            // The path goes into the object names rather than the base URL,
            // so that a push creates its collections (MKCOL) all the way down.
            let after_scheme = url.find("://").map_or(0, |i| i + 3);
            let (base, prefix) = match url[after_scheme..].find('/') {
                Some(i) => url.split_at(after_scheme + i),
                None => (url, ""),
            };
            let store = HttpBuilder::new()
                .with_url(base)
                .with_client_options(
                    client_options()
                        .with_allow_http(true)
                        .with_default_headers(headers),
                )
                .with_retry(retry())
                .build()
                .map_err(|e| bad(&e.to_string()))?;
            return ObjectBackend::new(store, prefix, CreateBy::CopyIfAbsent);
        }
        let path = match url.strip_prefix("file://") {
            Some(p) => p,
            None if url.contains("://") => {
                return Err(bad("use s3://, http://, https://, file:// or a path"))
            }
            None => url,
        };
        if !path.starts_with('/') {
            return Err(bad("a directory remote needs an absolute path"));
        }
        if create {
            std::fs::create_dir_all(path).map_err(|e| {
                BackendError::Other(format!("cannot create the remote directory {path}: {e}"))
            })?;
        } else if !std::path::Path::new(path).is_dir() {
            return Err(BackendError::NotFound(format!("the directory {path}")));
        }
        let store = LocalFileSystem::new_with_prefix(path).map_err(|e| bad(&e.to_string()))?;
        ObjectBackend::new(store, "", CreateBy::PutIfAbsent)
    }

    fn new(store: impl ObjectStore, prefix: &str, create_by: CreateBy) -> Result<ObjectBackend> {
        Ok(ObjectBackend {
            store: Arc::new(store),
            prefix: prefix.trim_matches('/').to_string(),
            create_by,
            runtime: runtime()?,
            made_dirs: Default::default(),
        })
    }

    /// An empty in-memory remote, for tests.
    #[cfg(test)]
    pub(crate) fn memory() -> ObjectBackend {
        ObjectBackend::new(
            object_store::memory::InMemory::new(),
            "",
            CreateBy::PutIfAbsent,
        )
        .expect("tokio runtime")
    }

    fn path(&self, p: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(p)
        } else {
            Path::from(format!("{}/{p}", self.prefix))
        }
    }

    fn strip<'a>(&self, p: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            p
        } else {
            p.strip_prefix(&self.prefix)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(p)
        }
    }
}

fn map_err(path: &str, e: object_store::Error) -> BackendError {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => BackendError::NotFound(path.to_string()),
        E::PermissionDenied { source, .. } | E::Unauthenticated { source, .. } => {
            BackendError::Denied(source.to_string())
        }
        other => {
            let msg = error_chain(&other);
            let lower = msg.to_lowercase();
            if msg.contains("NoSuchBucket") {
                BackendError::NotFound(
                    "the bucket (dot does not create buckets; create it first)".into(),
                )
            } else if lower.contains("connect")
                || lower.contains("dns")
                || lower.contains("timed out")
            {
                BackendError::Unreachable(msg)
            } else if lower.contains("403") || lower.contains("401") || lower.contains("forbidden")
            {
                BackendError::Denied(msg)
            } else {
                BackendError::Other(format!("{path}: {msg}"))
            }
        }
    }
}

/// An error with its sources, on one line: the interesting part of an
/// HTTP failure (connection refused, a status) is usually a source.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        src = s.source();
    }
    msg
}

impl Backend for ObjectBackend {
    fn get(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let p = self.path(path);
        let too_big = || BackendError::Damaged(format!("{path} is larger than {max} bytes"));
        self.runtime.block_on(async {
            let r = match self.store.get(&p).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(map_err(path, e)),
            };
            if r.meta.size > max {
                return Err(too_big());
            }
            let mut out = Vec::with_capacity(r.meta.size as usize);
            let mut stream = r.into_stream();
            while let Some(piece) = stream.try_next().await.map_err(|e| map_err(path, e))? {
                if (out.len() + piece.len()) as u64 > max {
                    return Err(too_big());
                }
                out.extend_from_slice(&piece);
            }
            Ok(Some(out))
        })
    }

    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let p = self.path(path);
        let want = range.end - range.start;
        let bytes = self
            .runtime
            .block_on(self.store.get_range(&p, range))
            .map_err(|e| map_err(path, e))?;
        if bytes.len() as u64 != want {
            return Err(BackendError::Damaged(format!(
                "{path}: asked for {want} bytes, got {}",
                bytes.len()
            )));
        }
        Ok(bytes.to_vec())
    }

    fn put(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        let p = self.path(path);
        let put = || {
            self.runtime
                .block_on(self.store.put(&p, PutPayload::from(bytes)))
                .map(|_| ())
                .map_err(|e| map_err(path, e))
        };
        if self.create_by != CreateBy::CopyIfAbsent {
            return put();
        }
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d).to_string();
        if self.made_dirs.lock().expect("lock").contains(&dir) {
            return put();
        }
        let mut made = self.made_dirs.lock().expect("lock");
        put()?;
        made.insert(dir);
        Ok(())
    }

    fn create(&self, path: &str, bytes: Vec<u8>) -> Result<bool> {
        let p = self.path(path);
        let exists = |e: &object_store::Error| {
            matches!(
                e,
                object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }
            )
        };
        match self.create_by {
            CreateBy::PutIfAbsent => {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                match self
                    .runtime
                    .block_on(self.store.put_opts(&p, PutPayload::from(bytes), opts))
                {
                    Ok(_) => Ok(true),
                    Err(e) if exists(&e) => Ok(false),
                    Err(e) => Err(map_err(path, e)),
                }
            }
            CreateBy::CopyIfAbsent => {
                let tmp = self.path(&format!("{path}.tmp-{}", random_hex()));
                self.runtime.block_on(async {
                    self.store
                        .put(&tmp, PutPayload::from(bytes))
                        .await
                        .map_err(|e| map_err(path, e))?;
                    let r = self.store.copy_if_not_exists(&tmp, &p).await;
                    let _ = self.store.delete(&tmp).await;
                    match r {
                        Ok(()) => Ok(true),
                        Err(e) if exists(&e) => Ok(false),
                        // 423 Locked: another COPY to the same name holds
                        // it right now, a race this create has lost.
                        // object_store offers no status here, only text.
                        Err(e) if error_chain(&e).contains("423 Locked") => Ok(false),
                        Err(e) => Err(map_err(path, e)),
                    }
                })
            }
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let p = self.path(prefix.trim_end_matches('/'));
        let found: Vec<_> = match self
            .runtime
            .block_on(self.store.list(Some(&p)).try_collect::<Vec<_>>())
        {
            Ok(v) => v,
            // A WebDAV server answers 404 for a collection never created.
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(map_err(prefix, e)),
        };
        Ok(found
            .into_iter()
            .map(|m| (self.strip(m.location.as_ref()).to_string(), m.size))
            .filter(|(name, _)| name.starts_with(prefix))
            .collect())
    }

    fn delete(&self, path: &str) -> Result<()> {
        let p = self.path(path);
        match self.runtime.block_on(self.store.delete(&p)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(path, e)),
        }
    }
}

/// A name no other process or thread picks at the same time: the clock,
/// pid and thread hashed.
pub(crate) fn random_hex() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = format!(
        "{}-{}-{:?}",
        now.as_nanos(),
        std::process::id(),
        std::thread::current().id()
    );
    blake3::hash(seed.as_bytes()).to_hex()[..16].to_string()
}
