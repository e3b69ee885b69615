//! The audit log (ContainerSSH's `audit` keys where they exist).
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditConfig {
    /// Write an audit log per connection (and recordings of terminal sessions).
    #[serde(default)]
    pub enable: bool,
    /// `asciinema` (JSON lines per connection, asciicast v2 per terminal session) or `binary`
    /// (JSON lines per connection and ContainerSSH's binary audit log with the sessions' I/O,
    /// no asciicast files); `none`: the JSON lines only.
    #[serde(default = "default_format")]
    pub format: String,
    /// `file` (the files stay in `file.directory`) or `s3` (staged in `s3.local`, uploaded to
    /// an S3 bucket when the connection ends).
    #[serde(default = "default_storage")]
    pub storage: String,
    #[serde(default)]
    pub file: AuditFileConfig,
    /// ContainerSSH's S3 storage settings (`storage: s3`).
    #[serde(default)]
    pub s3: AuditS3Config,
    #[serde(default)]
    pub intercept: InterceptConfig,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enable: false,
            format: default_format(),
            storage: default_storage(),
            file: AuditFileConfig::default(),
            s3: AuditS3Config::default(),
            intercept: InterceptConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditFileConfig {
    /// Where audit logs and recordings go (created with mode 0700).
    #[serde(default = "default_directory")]
    pub directory: PathBuf,
}

impl Default for AuditFileConfig {
    fn default() -> Self {
        Self {
            directory: default_directory(),
        }
    }
}

/// ContainerSSH's `audit.s3`: an S3 (or S3-compatible) bucket the audit files are uploaded to.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditS3Config {
    /// The staging directory: files are written here and removed once uploaded (created with
    /// mode 0700). Files left here by an earlier run are uploaded at start.
    #[serde(default = "default_s3_local")]
    pub local: PathBuf,
    #[serde(default)]
    pub access_key: String,
    /// Never logged; `--dump-config` redacts it.
    #[serde(default)]
    pub secret_key: String,
    #[serde(default)]
    pub bucket: String,
    /// Empty: `us-east-1`.
    #[serde(default)]
    pub region: String,
    /// An S3-compatible server's URL (`https://minio.example:9000`). Empty: AWS's endpoint for
    /// the region.
    #[serde(default)]
    pub endpoint: String,
    /// CA certificate(s) to trust besides the system's: PEM text or a file path.
    #[serde(default)]
    pub cacert: String,
    /// Canned ACL of the uploaded objects (`private`, `bucket-owner-full-control`, ...).
    #[serde(default)]
    pub acl: String,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key`.
    #[serde(default)]
    pub path_style_access: bool,
    /// Files larger than this are uploaded in parts of this size (at least 5 MiB).
    #[serde(default = "default_upload_part_size")]
    pub upload_part_size: u64,
    /// How many objects or parts are uploaded at the same time, across all connections.
    #[serde(default = "default_parallel_uploads")]
    pub parallel_uploads: u64,
    #[serde(default)]
    pub metadata: AuditS3Metadata,
}

/// Which details of the connection go into the objects' metadata (besides `timestamp`,
/// `authenticated` and `country`, always set as ContainerSSH does).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditS3Metadata {
    /// `ip`: the client's address.
    #[serde(default)]
    pub ip: bool,
    /// `username`: the user name of the successful login.
    #[serde(default)]
    pub username: bool,
}

impl Default for AuditS3Config {
    fn default() -> Self {
        Self {
            local: default_s3_local(),
            access_key: String::new(),
            secret_key: String::new(),
            bucket: String::new(),
            region: String::new(),
            endpoint: String::new(),
            cacert: String::new(),
            acl: String::new(),
            path_style_access: false,
            upload_part_size: default_upload_part_size(),
            parallel_uploads: default_parallel_uploads(),
            metadata: AuditS3Metadata::default(),
        }
    }
}

/// The secret key never appears in a debug print.
impl std::fmt::Debug for AuditS3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditS3Config")
            .field("local", &self.local)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("cacert", &self.cacert)
            .field("acl", &self.acl)
            .field("path_style_access", &self.path_style_access)
            .field("upload_part_size", &self.upload_part_size)
            .field("parallel_uploads", &self.parallel_uploads)
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// S3's smallest part (but the last) of a multipart upload, and ContainerSSH's default size.
pub const MIN_UPLOAD_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_UPLOAD_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;

impl AuditS3Config {
    /// Every problem with these settings (`storage: s3` on).
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.local.as_os_str().is_empty() {
            problems.push("audit.s3.local: the local staging directory is required".into());
        }
        for (key, value) in [
            ("accessKey", &self.access_key),
            ("secretKey", &self.secret_key),
            ("bucket", &self.bucket),
        ] {
            if value.trim().is_empty() {
                problems.push(format!("audit.s3.{key}: required with audit.storage: s3"));
            }
        }
        if !(MIN_UPLOAD_PART_SIZE..=MAX_UPLOAD_PART_SIZE).contains(&self.upload_part_size) {
            problems.push(format!(
                "audit.s3.uploadPartSize: {} is out of range ({MIN_UPLOAD_PART_SIZE} to {MAX_UPLOAD_PART_SIZE} bytes)",
                self.upload_part_size
            ));
        }
        if self.parallel_uploads == 0 {
            problems.push("audit.s3.parallelUploads: must be at least 1".into());
        }
        if !self.endpoint.is_empty() {
            if let Err(why) = endpoint_url(&self.endpoint) {
                problems.push(format!("audit.s3.endpoint: {why}"));
            }
        }
        if !self.acl.is_empty() && http::HeaderValue::from_str(&self.acl).is_err() {
            problems.push(format!(
                "audit.s3.acl: {:?} is not a canned ACL name",
                self.acl
            ));
        }
        if !self.cacert.trim().is_empty() {
            if let Err(e) = self.ca_certificates() {
                problems.push(format!("audit.s3.{e:#}"));
            }
        }
        problems
    }

    /// The CA certificates of `cacert` (PEM text or a file), DER-encoded.
    pub fn ca_certificates(
        &self,
    ) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
        use anyhow::Context;
        use rustls::pki_types::pem::PemObject;
        let pem = crate::plugin::tls::load_pem("cacert", &self.cacert)?;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .context("cacert: not a PEM certificate")?;
        if certs.is_empty() {
            anyhow::bail!("cacert: no certificate found");
        }
        Ok(certs)
    }
}

/// `endpoint` as an http(s) URL with a host: (scheme, host, port, path).
pub fn endpoint_url(endpoint: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|_| format!("{endpoint:?} is not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!(
            "{endpoint:?}: the URL must start with https:// or http://"
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{endpoint:?}: the URL has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("{endpoint:?}: the URL must not have a query"));
    }
    Ok(uri)
}

/// What of a session is recorded: of terminal sessions in asciicast recordings (`format:
/// asciinema`), of every session in the binary log (`format: binary`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterceptConfig {
    /// Keystrokes (asciicast "i" events), a session's input in the binary log. Off by
    /// default: what users type includes secrets.
    #[serde(default)]
    pub stdin: bool,
    /// Terminal output (asciicast "o" events), a session's stdout in the binary log.
    #[serde(default = "yes")]
    pub stdout: bool,
    /// A session's stderr in the binary log (a terminal has no separate stderr).
    #[serde(default = "yes")]
    pub stderr: bool,
    /// The bytes of forwarded connections, in the binary format (`format: binary`).
    #[serde(default)]
    pub forwarding: bool,
}

impl Default for InterceptConfig {
    fn default() -> Self {
        Self {
            stdin: false,
            stdout: true,
            stderr: true,
            forwarding: false,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_format() -> String {
    "asciinema".into()
}
fn default_storage() -> String {
    "file".into()
}
fn default_directory() -> PathBuf {
    PathBuf::from("/var/log/containerssh/audit")
}
fn default_s3_local() -> PathBuf {
    PathBuf::from("/var/lib/audit")
}
fn default_upload_part_size() -> u64 {
    MIN_UPLOAD_PART_SIZE
}
fn default_parallel_uploads() -> u64 {
    20
}

impl AuditConfig {
    /// Every problem with these settings.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self.storage.as_str() {
            "file" => {}
            // ContainerSSH checks the S3 settings only when auditing is on.
            "s3" if self.enable => problems.extend(self.s3.validate()),
            "s3" => {}
            other => problems.push(format!(
                "audit.storage: {other:?} is not supported (file or s3)"
            )),
        }
        if !matches!(self.format.as_str(), "asciinema" | "binary" | "none") {
            problems.push(format!(
                "audit.format: {:?} is not supported (asciinema: JSON lines plus asciicast v2 recordings; binary: ContainerSSH's binary log)",
                self.format
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(v: serde_json::Value) -> AuditConfig {
        serde_json::from_value(v).expect("parses")
    }

    #[test]
    fn s3_settings_take_containerssh_keys_and_defaults() {
        let a = audit(serde_json::json!({
            "enable": true, "storage": "s3",
            "s3": {"local": "/var/lib/audit", "accessKey": "AK", "secretKey": "SK",
                   "bucket": "audit", "region": "eu-west-1",
                   "endpoint": "https://minio.example:9000", "cacert": "", "acl": "private",
                   "pathStyleAccess": true, "uploadPartSize": 6291456, "parallelUploads": 4,
                   "metadata": {"ip": true, "username": true}}
        }));
        assert!(a.validate().is_empty(), "{:?}", a.validate());
        assert_eq!(a.s3.upload_part_size, 6291456);
        assert!(a.s3.path_style_access && a.s3.metadata.ip && a.s3.metadata.username);
        let d = AuditS3Config::default();
        assert_eq!(d.local, PathBuf::from("/var/lib/audit"));
        assert_eq!((d.upload_part_size, d.parallel_uploads), (5242880, 20));
        // The secret never shows in a debug print.
        assert!(!format!("{a:?}").contains("SK"));
    }

    #[test]
    fn missing_or_wrong_s3_settings_name_their_key() {
        let a = audit(serde_json::json!({"enable": true, "storage": "s3",
            "s3": {"local": "", "uploadPartSize": 1024, "parallelUploads": 0,
                   "endpoint": "ftp://x", "acl": "bad\nacl", "cacert": "/nonexistent/ca.pem"}}));
        let problems = a.validate();
        for key in [
            "audit.s3.local:",
            "audit.s3.accessKey:",
            "audit.s3.secretKey:",
            "audit.s3.bucket:",
            "audit.s3.uploadPartSize:",
            "audit.s3.parallelUploads:",
            "audit.s3.endpoint:",
            "audit.s3.acl:",
            "audit.s3.cacert:",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key}: {problems:?}"
            );
        }
        assert_eq!(problems.len(), 9, "{problems:?}");
        // Only checked when auditing is on, as ContainerSSH does.
        let off = audit(serde_json::json!({"enable": false, "storage": "s3"}));
        assert!(off.validate().is_empty());
        // A whole bucket but no endpoint host.
        let a = audit(serde_json::json!({"enable": true, "storage": "s3",
            "s3": {"accessKey": "a", "secretKey": "s", "bucket": "b", "endpoint": "https://"}}));
        assert!(
            a.validate()[0].starts_with("audit.s3.endpoint:"),
            "{:?}",
            a.validate()
        );
        let a = audit(serde_json::json!({"enable": true, "storage": "gcs"}));
        assert!(a.validate()[0].starts_with("audit.storage:"));
    }
}
