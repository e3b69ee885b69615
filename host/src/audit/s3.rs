//! `audit.storage: s3`, as ContainerSSH's S3 storage: a connection's audit files are written to
//! the staging directory `audit.s3.local` exactly as with file storage, and uploaded to the
//! bucket when the connection ends (the object key is the file's name). A file is removed only
//! after its upload succeeded; uploads are retried with backoff, and files an earlier run left
//! (a gateway killed mid-upload, an outage longer than the retries) are uploaded at start and
//! by a rescan every few minutes, so no audit record is lost.
//!
//! Files larger than `uploadPartSize` go up as multipart uploads, `parallelUploads` objects or
//! parts at a time across the gateway. The upload id of a multipart upload in progress is kept
//! next to the file (`<file>.multipart`), so that one a killed run left is aborted (its parts
//! would be billed) before the file is uploaded again.
//!
//! Each object carries ContainerSSH's metadata: `timestamp` (the connection's start, Unix
//! seconds), `authenticated`, `country` (the `connect` event's, else `XX`) and, when `metadata.username`
//! and `metadata.ip` ask for them, `username` and `ip`. They are read from the connection's own
//! audit log, which is uploaded last, so that a restarted gateway has them too.
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderName, HeaderValue};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{HttpClient, HttpConnector};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, PutOptions, PutPayload};
use object_store::{MultipartId, RetryConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt};
use tokio::sync::{OnceCell, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::AuditS3Config;

/// S3's limit on the parts of one upload; bigger files get bigger parts.
const MAX_PARTS: u64 = 10_000;
/// Attempts at one file before it is left for the next rescan (about 8 minutes of backoff).
const RETRIES: usize = 12;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);
/// How often `local` is searched for files no upload is working on.
const RESCAN: Duration = Duration::from_secs(10 * 60);
/// Next to a file: the id of its multipart upload in progress.
const MULTIPART_SUFFIX: &str = ".multipart";
/// Next to a file ContainerSSH staged: its connection's metadata.
const CONTAINERSSH_METADATA_SUFFIX: &str = ".metadata.json";
/// `country` without GeoIP, as ContainerSSH's `dummy` provider answers.
const NO_COUNTRY: &str = "XX";

/// Uploads the staged audit files.
pub struct S3Storage {
    config: AuditS3Config,
    local: PathBuf,
    /// The endpoint object_store is given (the bucket in it when virtual-hosted); `None`: AWS.
    endpoint: Option<String>,
    acl: Option<HeaderValue>,
    part_size: u64,
    parallel: usize,
    /// Objects and parts uploading at once, across the gateway (`parallelUploads`).
    slots: Semaphore,
    /// Built on first use, off the async workers (it reads the system's CA certificates).
    clients: OnceCell<Clients>,
    /// Files a connection is writing or an upload is working on: the rescan leaves them alone.
    busy: Mutex<HashSet<String>>,
    uploads: TaskTracker,
    /// Cancelled when the gateway is asked to stop: failed uploads are then not retried.
    shutdown: CancellationToken,
}

struct Clients {
    http: reqwest::Client,
    /// Without per-object headers: parts, completion, aborts.
    plain: AmazonS3,
}

impl S3Storage {
    /// Reads no file and starts nothing (see `start`).
    pub fn new(config: &AuditS3Config) -> anyhow::Result<Arc<Self>> {
        let problems = config.validate();
        if !problems.is_empty() {
            anyhow::bail!("{}", problems.join("; "));
        }
        let endpoint = match config.endpoint.trim() {
            "" => None,
            e => Some(object_store_endpoint(
                e,
                &config.bucket,
                config.path_style_access,
            )?),
        };
        let acl = match config.acl.trim() {
            "" => None,
            acl => Some(HeaderValue::from_str(acl).context("audit.s3.acl")?),
        };
        let parallel = usize::try_from(config.parallel_uploads)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        Ok(Arc::new(Self {
            local: config.local.clone(),
            endpoint,
            acl,
            part_size: config.upload_part_size,
            parallel,
            slots: Semaphore::new(parallel),
            clients: OnceCell::new(),
            busy: Mutex::new(HashSet::new()),
            uploads: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            config: config.clone(),
        }))
    }

    /// Uploads what `local` holds now and every `RESCAN`, and notices the gateway's shutdown.
    /// Files claimed before (this run's connections) are left to their connections.
    pub fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Handle::try_current()
            .context("audit.storage s3: needs the gateway's runtime")?;
        let this = self.clone();
        runtime.spawn(async move {
            loop {
                if let Err(e) = this.scan().await {
                    tracing::error!(directory = %this.local.display(), error = format!("{e:#}"),
                        "cannot look for staged audit files to upload");
                }
                tokio::select! {
                    _ = tokio::time::sleep(RESCAN) => {}
                    _ = this.shutdown.cancelled() => return,
                }
            }
        });
        runtime.spawn(self.clone().watch_shutdown());
        Ok(())
    }

    /// Marks a file a connection writes as its own (before creating it).
    pub fn claim(&self, name: &str) {
        if let Ok(mut busy) = self.busy.lock() {
            busy.insert(name.to_string());
        }
    }

    pub fn release(&self, names: &[String]) {
        if let Ok(mut busy) = self.busy.lock() {
            for name in names {
                busy.remove(name);
            }
        }
    }

    /// Uploads the files of a connection that ended (its log and recordings are closed) and
    /// waits for the uploads, retries included (shutdown waits for connections' cleanups, so
    /// it waits for these too, within its deadline). The work goes on if this is dropped.
    pub async fn upload_connection(self: &Arc<Self>, connection_id: &str, recordings: Vec<String>) {
        let log = format!("{connection_id}.jsonl");
        let mut names = recordings.clone();
        names.push(log.clone());
        let this = self.clone();
        let task = self.uploads.spawn(async move {
            let mut left = Unfinished(names.clone());
            this.upload_group(Some(log), recordings).await;
            this.release(&names);
            left.0.clear();
        });
        let _ = task.await;
    }

    /// The files of a connection whose recordings were still being written when it ended:
    /// uploaded once `recordings` are done, however long that takes (the files stay claimed,
    /// so no rescan takes a half-written one).
    pub fn upload_connection_later(
        self: &Arc<Self>,
        connection_id: String,
        recording_names: Vec<String>,
        recordings: TaskTracker,
    ) {
        let this = self.clone();
        self.uploads.spawn(async move {
            recordings.wait().await;
            this.upload_connection(&connection_id, recording_names)
                .await;
        });
    }

    /// One connection's files: the recordings (or a file ContainerSSH staged), then the log, and
    /// the log only when the others are uploaded (their metadata comes from it).
    async fn upload_group(&self, log: Option<String>, others: Vec<String>) -> bool {
        let connection = match &log {
            Some(log) => read_log_metadata(&self.local.join(log)).await,
            None => ConnectionMetadata::default(),
        };
        let mut all = true;
        for name in &others {
            let metadata = match self.containerssh_metadata(name).await {
                Some(m) => m,
                None => connection.clone(),
            };
            all &= self.upload(name, &self.headers(name, &metadata)).await;
        }
        if let Some(log) = log {
            if all {
                all = self.upload(&log, &self.headers(&log, &connection)).await;
            } else {
                tracing::warn!(file = %log, "the connection's audit log stays staged until its recordings are uploaded");
            }
        }
        all
    }

    /// Uploads one file with retries and removes it once uploaded; false if it stays staged.
    async fn upload(&self, name: &str, headers: &HeaderMap) -> bool {
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(FIRST_RETRY)
            .with_max_delay(LAST_RETRY)
            .with_max_times(RETRIES)
            .with_jitter()
            .build();
        loop {
            let error = match self.upload_once(name, headers).await {
                Ok(()) => break,
                // Gone meanwhile: another upload (a connection's, a rescan's) took it.
                Err(_)
                    if !tokio::fs::try_exists(self.local.join(name))
                        .await
                        .unwrap_or(true) =>
                {
                    tracing::debug!(file = name, "audit file already uploaded");
                    return true;
                }
                Err(e) => format!("{e:#}"),
            };
            if self.shutdown.is_cancelled() {
                tracing::warn!(file = name, error,
                    "audit upload failed during shutdown; the file stays in audit.s3.local and is uploaded at the next start");
                return false;
            }
            let Some(wait) = backoff.next() else {
                tracing::error!(file = name, error, attempts = RETRIES + 1,
                    "audit upload keeps failing; the file stays in audit.s3.local and is tried again later");
                return false;
            };
            tracing::warn!(file = name, error, retry_in = ?wait, "audit upload failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                // One last attempt now, rather than a wait the shutdown would cut short.
                _ = self.shutdown.cancelled() => {}
            }
        }
        tracing::info!(file = name, bucket = %self.config.bucket, "audit file uploaded");
        let path = self.local.join(name);
        if let Err(e) = tokio::fs::remove_file(&path).await {
            // Uploaded: a later run uploads it again (the same object), nothing is lost.
            tracing::error!(file = %path.display(), error = %e, "cannot remove an uploaded audit file");
        }
        let sidecar = self
            .local
            .join(format!("{name}{CONTAINERSSH_METADATA_SUFFIX}"));
        let _ = tokio::fs::remove_file(sidecar).await;
        true
    }

    async fn upload_once(&self, name: &str, headers: &HeaderMap) -> anyhow::Result<()> {
        let clients = self.clients().await?;
        let path = self.local.join(name);
        let location = ObjectPath::from(name);
        self.abort_left_upload(clients, name, &location).await;
        let size = tokio::fs::metadata(&path)
            .await
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        // PutObject and CreateMultipartUpload carry the metadata and ACL, signed with the
        // request; parts and the completion do not.
        let store = self.store(&clients.http, headers.clone())?;
        if size <= self.part_size {
            let _slot = self.slots.acquire().await?;
            let data = tokio::fs::read(&path)
                .await
                .with_context(|| format!("cannot read {}", path.display()))?;
            store
                .put_opts(&location, PutPayload::from(data), PutOptions::default())
                .await
                .context("PutObject")?;
            return Ok(());
        }
        let part_size = self.part_size.max(size.div_ceil(MAX_PARTS));
        let id = store
            .create_multipart(&location)
            .await
            .context("CreateMultipartUpload")?;
        let marker = self.local.join(format!("{name}{MULTIPART_SUFFIX}"));
        if let Err(e) = tokio::fs::write(&marker, id.as_bytes()).await {
            tracing::warn!(file = %marker.display(), error = %e, "cannot note the multipart upload's id");
        }
        let result = match self
            .upload_parts(&clients.plain, &location, &id, &path, size, part_size)
            .await
        {
            Ok(parts) => clients
                .plain
                .complete_multipart(&location, &id, parts)
                .await
                .map(|_| ())
                .context("CompleteMultipartUpload"),
            Err(e) => Err(e),
        };
        let gone = match &result {
            Ok(()) => true,
            Err(_) => abort(&clients.plain, &location, &id).await,
        };
        if gone {
            let _ = tokio::fs::remove_file(&marker).await;
        }
        result
    }

    /// The parts of `path`, `parallelUploads` at a time (shared with every other upload).
    async fn upload_parts(
        &self,
        plain: &AmazonS3,
        location: &ObjectPath,
        id: &MultipartId,
        path: &Path,
        size: u64,
        part_size: u64,
    ) -> anyhow::Result<Vec<PartId>> {
        futures::stream::iter(0..size.div_ceil(part_size))
            .map(|index| async move {
                let _slot = self.slots.acquire().await?;
                let start = index * part_size;
                let data = read_range(path, start, part_size.min(size - start)).await?;
                let index = usize::try_from(index).context("part number")?;
                plain
                    .put_part(location, id, index, PutPayload::from(data))
                    .await
                    .with_context(|| format!("UploadPart {}", index + 1))
            })
            .buffered(self.parallel)
            .try_collect()
            .await
    }

    /// Aborts the multipart upload a killed run (or a failed abort) left for `name`.
    async fn abort_left_upload(&self, clients: &Clients, name: &str, location: &ObjectPath) {
        let marker = self.local.join(format!("{name}{MULTIPART_SUFFIX}"));
        let Ok(id) = tokio::fs::read_to_string(&marker).await else {
            return;
        };
        let id = id.trim().to_string();
        if id.is_empty() || abort(&clients.plain, location, &id).await {
            let _ = tokio::fs::remove_file(&marker).await;
        }
    }

    async fn clients(&self) -> anyhow::Result<&Clients> {
        self.clients
            .get_or_try_init(|| async {
                let config = self.config.clone();
                let http = tokio::task::spawn_blocking(move || http_client(&config))
                    .await
                    .context("building the S3 client")??;
                let plain = self.store(&http, HeaderMap::new())?;
                Ok(Clients { http, plain })
            })
            .await
    }

    /// A client of the bucket that sends `headers` with every request (signed with it).
    fn store(&self, http: &reqwest::Client, headers: HeaderMap) -> anyhow::Result<AmazonS3> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&self.config.bucket)
            .with_region(match self.config.region.trim() {
                "" => "us-east-1",
                region => region,
            })
            .with_access_key_id(&self.config.access_key)
            .with_secret_access_key(&self.config.secret_key)
            .with_virtual_hosted_style_request(!self.config.path_style_access)
            // Each request's own retries, for blips; `upload` retries the whole file.
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(200),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
            })
            .with_client_options(ClientOptions::new().with_default_headers(headers))
            .with_http_connector(Connector(http.clone()));
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        // The error names the setting, never the secret key.
        builder
            .build()
            .context("audit.s3: cannot set up the S3 client")
    }

    /// The object's headers: ContainerSSH's metadata, the ACL, a content type.
    fn headers(&self, name: &str, metadata: &ConnectionMetadata) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let mut meta = |key: &'static str, value: &str| {
            headers.insert(
                HeaderName::from_static(key),
                HeaderValue::from_str(&header_text(value))
                    .unwrap_or_else(|_| HeaderValue::from_static("")),
            );
        };
        meta(
            "x-amz-meta-timestamp",
            &metadata.start.unwrap_or(0).to_string(),
        );
        meta(
            "x-amz-meta-authenticated",
            if metadata.username.is_some() {
                "true"
            } else {
                "false"
            },
        );
        meta(
            "x-amz-meta-country",
            metadata.country.as_deref().unwrap_or(NO_COUNTRY),
        );
        if self.config.metadata.username {
            if let Some(user) = &metadata.username {
                meta("x-amz-meta-username", user);
            }
        }
        if self.config.metadata.ip {
            if let Some(ip) = &metadata.ip {
                meta("x-amz-meta-ip", ip);
            }
        }
        if let Some(acl) = &self.acl {
            headers.insert(HeaderName::from_static("x-amz-acl"), acl.clone());
        }
        let content_type = if name.ends_with(".jsonl") {
            "application/jsonl"
        } else if name.ends_with(".cast") {
            "application/x-asciicast"
        } else {
            "application/octet-stream"
        };
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        headers
    }

    /// The metadata ContainerSSH staged next to one of its files, if any.
    async fn containerssh_metadata(&self, name: &str) -> Option<ConnectionMetadata> {
        let path = self
            .local
            .join(format!("{name}{CONTAINERSSH_METADATA_SUFFIX}"));
        let text = tokio::fs::read(path).await.ok()?;
        let value: serde_json::Value = serde_json::from_slice(&text).ok()?;
        let authenticated = value["authenticated"].as_bool().unwrap_or(false);
        Some(ConnectionMetadata {
            start: value["startTime"].as_u64(),
            ip: value["remoteAddr"].as_str().map(str::to_string),
            username: value["username"]
                .as_str()
                .filter(|_| authenticated)
                .map(str::to_string),
            country: value["country"]
                .as_str()
                .filter(|c| !c.is_empty())
                .map(str::to_string),
        })
    }

    /// Uploads the files in `local` nobody is working on, a connection's log after its
    /// recordings, `parallelUploads` connections at a time.
    async fn scan(self: &Arc<Self>) -> anyhow::Result<()> {
        let mut dir = tokio::fs::read_dir(&self.local).await?;
        let mut found = Vec::new();
        while let Some(entry) = dir.next_entry().await? {
            if !entry.file_type().await?.is_file() {
                continue;
            }
            let Ok(name) = entry.file_name().into_string() else {
                tracing::warn!(file = %entry.path().display(), "audit.s3.local: a file whose name is not UTF-8 is not uploaded");
                continue;
            };
            if name.starts_with('.')
                || name.ends_with(MULTIPART_SUFFIX)
                || name.ends_with(CONTAINERSSH_METADATA_SUFFIX)
            {
                continue;
            }
            found.push(name);
        }
        let claimed: Vec<String> = match self.busy.lock() {
            Ok(mut busy) => found
                .into_iter()
                .filter(|n| busy.insert(n.clone()))
                .collect(),
            Err(_) => Vec::new(),
        };
        if claimed.is_empty() {
            return Ok(());
        }
        tracing::info!(
            files = claimed.len(),
            "uploading audit files left in audit.s3.local"
        );
        let mut groups: BTreeMap<String, (Option<String>, Vec<String>)> = BTreeMap::new();
        for name in claimed {
            let (connection, is_log) = connection_of(&name);
            let group = groups.entry(connection.to_string()).or_default();
            if is_log {
                group.0 = Some(name);
            } else {
                group.1.push(name);
            }
        }
        futures::stream::iter(groups.into_values())
            .for_each_concurrent(self.parallel, |(log, others)| async move {
                let mut names = others.clone();
                names.extend(log.clone());
                let mut left = Unfinished(names.clone());
                self.upload_group(log, others).await;
                self.release(&names);
                left.0.clear();
            })
            .await;
        Ok(())
    }

    /// At SIGTERM or SIGINT (the gateway's shutdown): no more retries, and what is not
    /// uploaded yet is said.
    async fn watch_shutdown(self: Arc<Self>) {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        self.shutdown.cancel();
        let mut pending: Vec<String> = self
            .busy
            .lock()
            .map(|b| b.iter().cloned().collect())
            .unwrap_or_default();
        pending.sort();
        if !pending.is_empty() {
            tracing::info!(?pending, "audit files not uploaded yet: connections still ending upload theirs once more; whatever is not uploaded by exit stays in audit.s3.local and is uploaded at the next start");
        }
    }
}

/// Aborts a multipart upload; true if it is gone (aborted, or unknown to the server).
async fn abort(plain: &AmazonS3, location: &ObjectPath, id: &MultipartId) -> bool {
    match plain.abort_multipart(location, id).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => true,
        Err(e) => {
            tracing::warn!(file = %location, error = %e, "cannot abort an unfinished multipart upload; tried again with the file's next upload");
            false
        }
    }
}

/// Logs the files of an upload cut short (the runtime ending at exit drops its task).
struct Unfinished(Vec<String>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            tracing::warn!(files = ?self.0, "audit upload interrupted; the files stay in audit.s3.local and are uploaded at the next start");
        }
    }
}

/// Hands object_store the gateway's own HTTP client (rustls with ring, the system's CAs and
/// `cacert`).
#[derive(Debug)]
struct Connector(reqwest::Client);

impl HttpConnector for Connector {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(self.0.clone()))
    }
}

/// The HTTP client for S3 (blocking: reads the system's CA certificates and `cacert`). Proxies
/// from the environment apply, as they do for ContainerSSH.
fn http_client(config: &AuditS3Config) -> anyhow::Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if !config.cacert.trim().is_empty() {
        for cert in config.ca_certificates().context("audit.s3")? {
            roots
                .add(cert)
                .context("audit.s3.cacert: unusable CA certificate")?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("audit.s3: TLS versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .context("audit.s3: cannot build the HTTP client")
}

/// The endpoint as object_store takes it: virtual-hosted style puts the bucket in the host
/// (`https://bucket.minio.example`), as ContainerSSH's AWS SDK does.
fn object_store_endpoint(endpoint: &str, bucket: &str, path_style: bool) -> anyhow::Result<String> {
    let uri = crate::config::endpoint_url(endpoint)
        .map_err(|why| anyhow::anyhow!("audit.s3.endpoint: {why}"))?;
    let scheme = uri.scheme_str().unwrap_or("https");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let path = uri.path().trim_end_matches('/');
    Ok(if path_style {
        format!("{scheme}://{authority}{path}")
    } else {
        format!("{scheme}://{bucket}.{authority}{path}")
    })
}

/// Who connected, from where and when, as far as known.
#[derive(Debug, Clone, Default, PartialEq)]
struct ConnectionMetadata {
    /// Unix seconds.
    start: Option<u64>,
    ip: Option<String>,
    /// Set once a login succeeded.
    username: Option<String>,
    country: Option<String>,
}

/// The metadata in a connection's audit log: its `connect` event and first successful `auth`.
async fn read_log_metadata(path: &Path) -> ConnectionMetadata {
    let mut metadata = ConnectionMetadata::default();
    let Ok(file) = tokio::fs::File::open(path).await else {
        return metadata;
    };
    let mut lines = tokio::io::BufReader::new(file).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if log_line_metadata(&line, &mut metadata) {
            break;
        }
    }
    metadata
}

/// Takes what one log line says; true once the login is known (nothing more to read).
fn log_line_metadata(line: &str, metadata: &mut ConnectionMetadata) -> bool {
    let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
        return false;
    };
    match event["event"].as_str() {
        Some("connect") => {
            metadata.start = event["time"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            metadata.ip = event["remoteAddress"].as_str().map(|a| {
                a.parse::<std::net::SocketAddr>()
                    .map(|s| s.ip().to_string())
                    .unwrap_or_else(|_| a.to_string())
            });
            // The gateway's GeoIP answer, when the log has it.
            metadata.country = event["country"]
                .as_str()
                .filter(|c| !c.is_empty())
                .map(str::to_string);
            false
        }
        Some("auth") if event["result"] == "success" => {
            metadata.username = event["username"].as_str().map(str::to_string);
            true
        }
        _ => false,
    }
}

/// The connection a staged file belongs to (`<id>.jsonl`, `<id>-<session>.cast`; any other
/// file is its own), and whether it is the connection's log.
fn connection_of(name: &str) -> (&str, bool) {
    if let Some(id) = name.strip_suffix(".jsonl") {
        return (id, true);
    }
    if let Some((id, session)) = name
        .strip_suffix(".cast")
        .and_then(|stem| stem.rsplit_once('-'))
    {
        if !session.is_empty() && session.bytes().all(|b| b.is_ascii_digit()) {
            return (id, false);
        }
    }
    (name, false)
}

/// S3 metadata is US-ASCII: anything else (and `%`) is percent-encoded.
fn header_text(value: &str) -> String {
    let mut text = String::with_capacity(value.len());
    for byte in value.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            text.push(char::from(byte));
        } else {
            text.push_str(&format!("%{byte:02X}"));
        }
    }
    text
}

/// `len` bytes of `path` from `start`.
async fn read_range(path: &Path, start: u64, len: u64) -> anyhow::Result<Vec<u8>> {
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let mut data = vec![0; usize::try_from(len).context("part size")?];
    file.read_exact(&mut data)
        .await
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(v: serde_json::Value) -> Arc<S3Storage> {
        let mut base = serde_json::json!({"accessKey": "AK", "secretKey": "SK", "bucket": "audit"});
        if let (Some(b), serde_json::Value::Object(o)) = (base.as_object_mut(), v) {
            b.extend(o);
        }
        S3Storage::new(&serde_json::from_value(base).unwrap()).unwrap()
    }

    #[test]
    fn endpoints_are_path_or_virtual_hosted_style() {
        assert_eq!(
            object_store_endpoint("http://127.0.0.1:9000/", "b", true).unwrap(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            object_store_endpoint("https://minio.example:9000", "b", false).unwrap(),
            "https://b.minio.example:9000"
        );
        assert_eq!(
            object_store_endpoint("https://gw.example/s3/", "b", true).unwrap(),
            "https://gw.example/s3"
        );
        assert!(object_store_endpoint("minio:9000", "b", true).is_err());
        assert_eq!(storage(serde_json::json!({})).endpoint, None);
        // Settings that fail validation are refused, naming the key.
        let bad = S3Storage::new(&serde_json::from_value(serde_json::json!({})).unwrap());
        assert!(bad
            .err()
            .is_some_and(|e| e.to_string().contains("audit.s3.bucket")));
    }

    #[test]
    fn staged_files_group_by_connection() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(connection_of(&format!("{id}.jsonl")), (id, true));
        assert_eq!(connection_of(&format!("{id}-3.cast")), (id, false));
        // ContainerSSH's files: the connection id, no extension.
        assert_eq!(connection_of(id), (id, false));
        assert_eq!(connection_of("x-y.cast"), ("x-y.cast", false));
    }

    #[test]
    fn metadata_comes_from_the_log_as_containerssh_sets_it() {
        let mut m = ConnectionMetadata::default();
        let lines = [
            r#"{"time":"2024-05-01T10:00:00.123456789Z","connectionId":"c","event":"connect","remoteAddress":"[2001:db8::1]:50022","country":"DE"}"#,
            r#"{"time":"2024-05-01T10:00:01Z","connectionId":"c","event":"auth","username":"eve","result":"failure"}"#,
            "not json",
        ];
        for line in lines {
            assert!(!log_line_metadata(line, &mut m));
        }
        assert!(log_line_metadata(
            r#"{"event":"auth","username":"alice","result":"success"}"#,
            &mut m
        ));
        assert_eq!(m.start, Some(1714557600));
        assert_eq!(m.ip.as_deref(), Some("2001:db8::1"));
        assert_eq!(m.username.as_deref(), Some("alice"));

        let s = storage(serde_json::json!({"acl": "bucket-owner-full-control",
            "metadata": {"username": true, "ip": true}}));
        let h = s.headers("c.jsonl", &m);
        assert_eq!(h["x-amz-meta-timestamp"], "1714557600");
        assert_eq!(h["x-amz-meta-authenticated"], "true");
        assert_eq!(h["x-amz-meta-country"], "DE");
        assert_eq!(h["x-amz-meta-username"], "alice");
        assert_eq!(h["x-amz-meta-ip"], "2001:db8::1");
        assert_eq!(h["x-amz-acl"], "bucket-owner-full-control");
        assert_eq!(h["content-type"], "application/jsonl");
        // Without metadata.username/ip, and before a login: neither.
        let s = storage(serde_json::json!({}));
        let h = s.headers("c-1.cast", &ConnectionMetadata::default());
        assert_eq!(h["x-amz-meta-authenticated"], "false");
        assert_eq!(h["x-amz-meta-country"], "XX");
        assert!(h.get("x-amz-meta-username").is_none() && h.get("x-amz-meta-ip").is_none());
        assert!(h.get("x-amz-acl").is_none());
        assert_eq!(h["content-type"], "application/x-asciicast");
        assert_eq!(header_text("jürgen 100%"), "j%C3%BCrgen 100%25");
    }

    #[tokio::test]
    async fn containerssh_staged_metadata_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage(serde_json::json!({"local": dir.path()}));
        tokio::fs::write(
            dir.path().join("abc.metadata.json"),
            r#"{"startTime":1700000000,"remoteAddr":"192.0.2.1","authenticated":true,"username":"bob","country":"XX"}"#,
        )
        .await
        .unwrap();
        let m = s.containerssh_metadata("abc").await.unwrap();
        assert_eq!(m.start, Some(1700000000));
        assert_eq!(m.username.as_deref(), Some("bob"));
        assert_eq!(m.ip.as_deref(), Some("192.0.2.1"));
        assert!(s.containerssh_metadata("other").await.is_none());
    }
}
