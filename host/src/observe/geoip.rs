//! GeoIP lookups, as ContainerSSH's `geoip` section configures them: the client's country
//! code goes into the `connect` audit record, the "connection accepted" log line and the
//! connections-by-country metric. `dummy` (the default) gives `XX` for every address, as in
//! ContainerSSH; `maxmind` reads a MaxMind GeoIP2 / GeoLite2 Country (or City) database.
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The country code of an address that cannot be placed (ContainerSSH's).
pub const UNKNOWN_COUNTRY: &str = "XX";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GeoIpProvider {
    #[default]
    Dummy,
    #[serde(alias = "MaxMind")]
    Maxmind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeoIpConfig {
    #[serde(default)]
    pub provider: GeoIpProvider,
    /// The database `maxmind` reads (ContainerSSH's key name and default).
    #[serde(
        default = "default_database",
        rename = "maxmind-geoip2-file",
        alias = "maxmindGeoip2File"
    )]
    pub maxmind_geoip2_file: PathBuf,
}

impl Default for GeoIpConfig {
    fn default() -> Self {
        Self {
            provider: GeoIpProvider::default(),
            maxmind_geoip2_file: default_database(),
        }
    }
}

fn default_database() -> PathBuf {
    PathBuf::from("/var/lib/GeoIP/GeoIP2-Country.mmdb")
}

impl GeoIpConfig {
    /// Problems with the settings: the database must be a readable file when it is used.
    pub fn validate(&self) -> Vec<String> {
        if self.provider != GeoIpProvider::Maxmind {
            return Vec::new();
        }
        let path = &self.maxmind_geoip2_file;
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => Vec::new(),
            Ok(_) => vec![format!(
                "geoip.maxmind-geoip2-file: {} is not a file",
                path.display()
            )],
            Err(e) => vec![format!(
                "geoip.maxmind-geoip2-file: cannot read {}: {e}",
                path.display()
            )],
        }
    }
}

/// Looks up country codes (cheap: the database is held in memory).
pub struct GeoIp {
    reader: Option<maxminddb::Reader<Vec<u8>>>,
}

/// The part of a Country or City record that is used.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    country: Option<Country<'a>>,
}

#[derive(Deserialize)]
struct Country<'a> {
    iso_code: Option<&'a str>,
}

impl GeoIp {
    /// Reads the database (blocking: call it off the async workers).
    pub fn load(config: &GeoIpConfig) -> anyhow::Result<GeoIp> {
        let reader = match config.provider {
            GeoIpProvider::Dummy => None,
            GeoIpProvider::Maxmind => Some(open(&config.maxmind_geoip2_file)?),
        };
        Ok(GeoIp { reader })
    }

    /// A lookup that always answers `XX`.
    pub fn dummy() -> GeoIp {
        GeoIp { reader: None }
    }

    pub fn is_dummy(&self) -> bool {
        self.reader.is_none()
    }

    /// The ISO country code of `ip`, or `XX`.
    pub fn country(&self, ip: IpAddr) -> String {
        let Some(reader) = &self.reader else {
            return UNKNOWN_COUNTRY.into();
        };
        // A client reached over an IPv6 socket may carry an IPv4-mapped address.
        let ip = ip.to_canonical();
        match reader.lookup::<Record>(ip) {
            Ok(Some(Record {
                country: Some(Country {
                    iso_code: Some(code),
                }),
            })) if is_country_code(code) => code.to_string(),
            Ok(_) => UNKNOWN_COUNTRY.into(),
            Err(e) => {
                tracing::debug!(%ip, error = %e, "GeoIP lookup failed");
                UNKNOWN_COUNTRY.into()
            }
        }
    }
}

/// Two ASCII letters: what else a database says is not used as a metric label.
fn is_country_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic())
}

/// How long reading a whole database may take (a real Country or City database: about a
/// second).
const VERIFY_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Opens the database and reads every record once: the reader panics on some malformed
/// files, so a database that does not read whole is refused at start rather than failing
/// (or panicking) in the middle of a login.
fn open(path: &Path) -> anyhow::Result<maxminddb::Reader<Vec<u8>>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("geoip: cannot read the MaxMind database {}", path.display()))?;
    // On a thread of its own, with a time limit: a search tree that loops would walk for ever
    // (the start then fails, and the process exits with the thread).
    let (sent, received) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("geoip-check".into())
        .spawn(move || {
            let checked = std::panic::catch_unwind(move || -> Result<_, String> {
                let reader = maxminddb::Reader::from_source(bytes).map_err(|e| e.to_string())?;
                verify(&reader)?;
                Ok(reader)
            });
            let _ = sent.send(checked);
        })
        .context("geoip: cannot start reading the database")?;
    let unusable = |why: &str| {
        anyhow::anyhow!(
            "geoip: {} is not a usable MaxMind database: {why}",
            path.display()
        )
    };
    let reader = match received.recv_timeout(VERIFY_LIMIT) {
        Ok(Ok(Ok(reader))) => reader,
        Ok(Ok(Err(e))) => return Err(unusable(&e)),
        Ok(Err(_)) => return Err(unusable("malformed")),
        Err(_) => {
            return Err(unusable(
                "reading it takes too long (a malformed search tree?)",
            ))
        }
    };
    let kind = &reader.metadata.database_type;
    if !kind.contains("Country") && !kind.contains("City") {
        tracing::warn!(
            path = %path.display(),
            database_type = %kind,
            "geoip: the database is not a Country or City database; lookups may give XX"
        );
    }
    Ok(reader)
}

/// Walks every network of the database, decoding its record. A well-formed tree has at most
/// one network more than it has nodes; more means a malformed (looping) tree.
fn verify(reader: &maxminddb::Reader<Vec<u8>>) -> Result<(), String> {
    let everything = if reader.metadata.ip_version == 6 {
        "::/0"
    } else {
        "0.0.0.0/0"
    };
    let everything: ipnetwork::IpNetwork = everything.parse().map_err(|e| format!("{e}"))?;
    let limit = reader.metadata.node_count as usize + 1;
    let networks = reader
        .within::<Record>(everything)
        .map_err(|e| e.to_string())?;
    for (n, item) in networks.enumerate() {
        if n > limit {
            return Err("more networks than the search tree can hold".into());
        }
        item.map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_says_xx_and_a_missing_database_is_named() {
        let geo = GeoIp::load(&GeoIpConfig::default()).unwrap();
        assert_eq!(geo.country("192.0.2.1".parse().unwrap()), "XX");
        let config = GeoIpConfig {
            provider: GeoIpProvider::Maxmind,
            maxmind_geoip2_file: "/nonexistent/GeoIP2-Country.mmdb".into(),
        };
        let problems = config.validate();
        assert!(
            problems[0].starts_with("geoip.maxmind-geoip2-file: cannot read /nonexistent"),
            "{problems:?}"
        );
        let e = GeoIp::load(&config).err().unwrap();
        assert!(format!("{e:#}").contains("/nonexistent"), "{e:#}");
    }

    #[test]
    fn a_file_that_is_no_database_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.mmdb");
        std::fs::write(&path, b"\xab\xcd\xefMaxMind.com garbage").unwrap();
        let config = GeoIpConfig {
            provider: GeoIpProvider::Maxmind,
            maxmind_geoip2_file: path,
        };
        assert!(config.validate().is_empty());
        assert!(GeoIp::load(&config).is_err());
    }

    #[test]
    fn only_two_letter_codes_are_taken() {
        assert!(is_country_code("DE"));
        assert!(!is_country_code("D E"));
        assert!(!is_country_code("Deutschland"));
        assert!(!is_country_code("\u{e9}\u{e9}"));
    }
}
