//! Quiver's object storage: `s3://` (and S3-compatible servers), `gs://` and `az://` URLs on
//! the `object_store` crate.
//!
//! [`ObjectStorage`] is one process's handle: the settings of `quiver.yaml`'s
//! `object_storage:` ([`StorageSettings`]), one client per bucket made on first use, and
//! blocking calls for Quiver's synchronous readers and writers, run on an IO runtime of this
//! crate's own (so they work from any thread, inside a Tokio runtime or not). Requests that
//! fail transiently (5xx, throttling, timeouts of reads, dropped connections) are retried with
//! exponential backoff by the client; what still fails is a [`StorageError`] naming the URL,
//! the bucket, the operation and the [`Failure`].
//!
//! Credentials come from the standard chains (environment, profiles, web identity, instance
//! metadata); they are never part of the settings, a registry version or a log line.
//!
//! ```no_run
//! use quiver_storage::{ObjectStorage, ObjectUrl, StorageSettings};
//! # fn f() -> quiver_storage::Result<()> {
//! let storage = ObjectStorage::new(StorageSettings::default());
//! let url = ObjectUrl::parse("s3://features/drivers/")?.expect("an object URL");
//! for object in storage.list(&url)? {
//!     println!("{} ({} bytes)", object.url, object.size);
//! }
//! # Ok(()) }
//! ```

pub mod error;
mod settings;
pub mod url;

use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

pub use error::{Failure, Result, StorageError};
pub use settings::{S3Settings, StorageSettings};
pub use url::{ObjectUrl, Scheme};

/// Requests of one call kept in flight at once (ranged reads of many objects).
const CONCURRENT_REQUESTS: usize = 32;

/// Size of one part of a multipart upload (and the largest file uploaded with one `PUT`).
pub const PART_BYTES: usize = 16 << 20;

/// Parts of one multipart upload in flight at once.
const UPLOADS_IN_FLIGHT: usize = 4;

/// One object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectFile {
    /// Where it is.
    pub url: ObjectUrl,
    /// Size in bytes.
    pub size: u64,
    /// The server's entity tag: changes whenever the object is replaced.
    pub etag: Option<String>,
    /// Last modification time, ms since the epoch.
    pub modified_ms: i64,
}

/// Static credentials, for embedding Quiver where no credential chain applies (tests).
#[derive(Clone)]
pub struct StaticCredentials {
    /// Access key id.
    pub key_id: String,
    /// Secret access key.
    pub secret_key: String,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A process's handle on object storage: settings and one client per bucket.
#[derive(Debug, Default)]
pub struct ObjectStorage {
    settings: StorageSettings,
    credentials: Option<StaticCredentials>,
    clients: Mutex<HashMap<(Scheme, String), Arc<dyn ObjectStore>>>,
}

impl ObjectStorage {
    /// Object storage with these settings and credentials from the standard chains.
    pub fn new(settings: StorageSettings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    /// Uses `credentials` for S3 instead of the credential chain.
    pub fn with_credentials(mut self, credentials: StaticCredentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The settings.
    pub fn settings(&self) -> &StorageSettings {
        &self.settings
    }

    fn client(&self, url: &ObjectUrl) -> Result<Arc<dyn ObjectStore>> {
        let key = url.store_key();
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = clients.get(&key) {
            return Ok(Arc::clone(c));
        }
        let client = settings::build_client(&self.settings, self.credentials.as_ref(), url)
            .map_err(|source| StorageError::Client {
                url: url.to_string(),
                bucket: url.bucket().to_owned(),
                source: Box::new(source),
            })?;
        clients.insert(key, Arc::clone(&client));
        Ok(client)
    }

    /// Every object under `prefix` taken as a folder (recursively), sorted by key.
    pub fn list(&self, prefix: &ObjectUrl) -> Result<Vec<ObjectFile>> {
        let client = self.client(prefix)?;
        let folder = prefix.folder_prefix();
        let base = prefix.clone();
        let listed = block_on(async move {
            let path = (!folder.is_empty()).then(|| object_store::path::Path::from(folder));
            client.list(path.as_ref()).try_collect::<Vec<_>>().await
        })
        .map_err(request(prefix, "LIST"))?;
        let mut files: Vec<ObjectFile> = listed
            .into_iter()
            .map(|m| ObjectFile {
                url: base.with_key(m.location.to_string()),
                size: m.size,
                etag: m.e_tag,
                modified_ms: m.last_modified.timestamp_millis(),
            })
            .collect();
        files.sort_by(|a, b| a.url.key().cmp(b.url.key()));
        Ok(files)
    }

    /// The object at `url`, or `None` when there is none.
    pub fn head(&self, url: &ObjectUrl) -> Result<Option<ObjectFile>> {
        let client = self.client(url)?;
        let path = url.object_path();
        match block_on(async move { client.head(&path).await }) {
            Ok(m) => Ok(Some(ObjectFile {
                url: url.clone(),
                size: m.size,
                etag: m.e_tag,
                modified_ms: m.last_modified.timestamp_millis(),
            })),
            Err(e) if classify_not_found(&e) => Ok(None),
            Err(e) => Err(request(url, "HEAD")(e)),
        }
    }

    /// The whole object at `url`, or `None` when there is none.
    pub fn get(&self, url: &ObjectUrl) -> Result<Option<Bytes>> {
        let client = self.client(url)?;
        let path = url.object_path();
        match block_on(async move { client.get(&path).await?.bytes().await }) {
            Ok(b) => Ok(Some(b)),
            Err(e) if classify_not_found(&e) => Ok(None),
            Err(e) => Err(request(url, "GET")(e)),
        }
    }

    /// Byte ranges of one object, only while its entity tag is `etag` (when given): an object
    /// replaced meanwhile fails with [`Failure::Changed`] instead of answering bytes of
    /// another version. Fetched concurrently, nearby
    /// ranges coalesced.
    pub fn get_ranges_if(
        &self,
        url: &ObjectUrl,
        etag: Option<&str>,
        ranges: Vec<Range<u64>>,
    ) -> Result<Vec<Bytes>> {
        let client = self.client(url)?;
        let path = url.object_path();
        let etag = etag.map(str::to_owned);
        block_on(async move {
            object_store::coalesce_ranges(
                &ranges,
                |range| {
                    let options = GetOptions {
                        range: Some(range.into()),
                        if_match: etag.clone(),
                        ..GetOptions::default()
                    };
                    let (client, path) = (Arc::clone(&client), path.clone());
                    async move { client.get_opts(&path, options).await?.bytes().await }
                },
                object_store::OBJECT_STORE_COALESCE_DEFAULT,
            )
            .await
        })
        .map_err(request(url, "GET range"))
    }

    /// The last `len` bytes (or fewer, for a smaller object) of each object of known size,
    /// all fetched concurrently; answers in the order asked.
    pub fn get_suffixes(&self, objects: &[(ObjectUrl, u64)], len: u64) -> Vec<Result<Bytes>> {
        let requests: Vec<futures::future::BoxFuture<'static, Result<Bytes>>> = objects
            .iter()
            .map(|(url, size)| {
                let (url, range) = (url.clone(), size.saturating_sub(len)..*size);
                let client = self.client(&url);
                async move {
                    client?
                        .get_range(&url.object_path(), range)
                        .await
                        .map_err(request(&url, "GET range"))
                }
                .boxed()
            })
            .collect();
        block_on(async move {
            futures::stream::iter(requests)
                .buffered(CONCURRENT_REQUESTS)
                .collect()
                .await
        })
    }

    /// Writes `bytes` at `url` unless an object is there; `false` if one was. The object
    /// becomes visible whole or not at all (`If-None-Match: *`).
    pub fn put_if_absent(&self, url: &ObjectUrl, bytes: Bytes) -> Result<bool> {
        let client = self.client(url)?;
        let path = url.object_path();
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match block_on(async move {
            client
                .put_opts(&path, PutPayload::from_bytes(bytes), options)
                .await
        }) {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(request(url, "PUT if absent")(e)),
        }
    }

    /// Writes `bytes` at `url`, replacing any object there; visible whole or not at all.
    pub fn put(&self, url: &ObjectUrl, bytes: Bytes) -> Result<()> {
        let client = self.client(url)?;
        let path = url.object_path();
        block_on(async move { client.put(&path, PutPayload::from_bytes(bytes)).await })
            .map(|_| ())
            .map_err(request(url, "PUT"))
    }

    /// Uploads the local file at `path` to `url`, replacing any object there: one `PUT` up to
    /// [`PART_BYTES`], else a multipart upload of [`PART_BYTES`] parts, a few in flight. The
    /// object becomes visible only when the upload completes: one that fails or is killed
    /// leaves nothing visible (a failed multipart upload is aborted; one killed outright is
    /// dropped by the bucket's lifecycle rules for incomplete uploads).
    pub fn upload_file(&self, url: &ObjectUrl, path: &std::path::Path) -> Result<()> {
        let client = self.client(url)?;
        let object = url.object_path();
        let file = path.to_owned();
        block_on(async move {
            let size = tokio::fs::metadata(&file)
                .await
                .map_err(local(&file))?
                .len();
            if size <= PART_BYTES as u64 {
                let bytes = tokio::fs::read(&file).await.map_err(local(&file))?;
                client.put(&object, PutPayload::from(bytes)).await?;
                return Ok(());
            }
            let upload = client.put_multipart(&object).await?;
            let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let mut reader = tokio::fs::File::open(&file).await.map_err(local(&file))?;
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                let n = tokio::io::AsyncReadExt::read(&mut reader, &mut buffer)
                    .await
                    .map_err(local(&file))?;
                if n == 0 {
                    break;
                }
                writer.wait_for_capacity(UPLOADS_IN_FLIGHT).await?;
                writer.write(&buffer[..n]);
            }
            writer.finish().await.map(|_| ())
        })
        .map_err(request(url, "PUT (upload)"))
    }

    /// Removes the object at `url` (nothing happens when there is none).
    pub fn delete(&self, url: &ObjectUrl) -> Result<()> {
        let client = self.client(url)?;
        let path = url.object_path();
        match block_on(async move { client.delete(&path).await }) {
            Ok(()) => Ok(()),
            Err(e) if classify_not_found(&e) => Ok(()),
            Err(e) => Err(request(url, "DELETE")(e)),
        }
    }
}

/// A local file's read error as a client error (the upload never started or was aborted).
fn local(path: &std::path::Path) -> impl Fn(std::io::Error) -> object_store::Error {
    let path = path.display().to_string();
    move |e| object_store::Error::Generic {
        store: "local file",
        source: format!("{path}: {e}").into(),
    }
}

fn classify_not_found(e: &object_store::Error) -> bool {
    error::classify(e) == Failure::NotFound
}

fn request(
    url: &ObjectUrl,
    operation: &'static str,
) -> impl Fn(object_store::Error) -> StorageError {
    let url = url.clone();
    move |source| StorageError::Request {
        url: url.to_string(),
        bucket: url.bucket().to_owned(),
        operation,
        failure: error::classify(&source),
        source: Box::new(source),
    }
}

/// Runs `future` to completion on the storage IO runtime and waits for it: callable from any
/// thread, inside an async runtime or not (the calling thread only waits).
fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv()
        .unwrap_or_else(|_| panic!("the storage IO runtime dropped a request"))
}

/// The runtime storage requests run on: two threads of its own, made on first use and kept
/// for the life of the process (never dropped inside another runtime).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("quiver-storage")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the storage IO runtime: {e}"))
    })
}
