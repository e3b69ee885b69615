//! Structured logs (text or JSON) to standard error, a file or syslog. `RUST_LOG` overrides the
//! configured level.
use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogDestination, LogFormat, SyslogConfig};

/// Keeps the file writer's thread alive; dropping it flushes what is queued.
pub struct LogGuard(#[allow(dead_code)] Option<tracing_appender::non_blocking::WorkerGuard>);

/// Sets up logging as configured. A destination that cannot be opened is an error (the
/// gateway does not start without its log).
pub fn init(config: &LogConfig) -> anyhow::Result<LogGuard> {
    let level = filter_level(&config.level).unwrap_or("info");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},russh=warn,bollard=warn,wasmtime=warn,cranelift=warn,hyper=warn,hyper_util=warn,reqwest=warn,rustls=warn,kube=warn,kube_client=warn,tower=warn,tungstenite=warn,tokio_tungstenite=warn"
        ))
    });
    match config.destination {
        LogDestination::Stdout => {
            // Colour codes only for a person at a terminal, never into files or journald.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            install(config.format, filter, std::io::stderr, ansi, true);
            Ok(LogGuard(None))
        }
        LogDestination::File => {
            use std::os::unix::fs::OpenOptionsExt;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(&config.file)
                .with_context(|| format!("log.file: cannot open {}", config.file.display()))?;
            // A writer thread does the file I/O; a full queue waits rather than drop lines.
            let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .lossy(false)
                .finish(file);
            install(config.format, filter, writer, false, true);
            Ok(LogGuard(Some(guard)))
        }
        LogDestination::Syslog => {
            let syslog = Syslog::connect(&config.syslog)?;
            // syslog stamps the time itself.
            install(
                config.format,
                filter,
                SyslogWriter(Arc::new(syslog)),
                false,
                false,
            );
            Ok(LogGuard(None))
        }
    }
}

/// The tracing level of a `log.level`: a name (ours or ContainerSSH's syslog names) or a
/// syslog severity number, 0 (emergency) to 7 (debug), as ContainerSSH takes it. `None`: not
/// a level.
pub fn filter_level(level: &str) -> Option<&'static str> {
    let level = level.trim();
    let name = match level.parse::<i64>() {
        Ok(number) => match number {
            7 => "debug",
            6 => "info",
            5 => "notice",
            4 => "warning",
            3 => "error",
            2 => "critical",
            1 => "alert",
            0 => "emergency",
            _ => return None,
        },
        Err(_) => level,
    };
    Some(match name.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" | "notice" => "info",
        "warn" | "warning" => "warn",
        "error" | "err" | "critical" | "crit" | "alert" | "emergency" | "emerg" => "error",
        _ => return None,
    })
}

fn install<W>(format: LogFormat, filter: EnvFilter, writer: W, ansi: bool, time: bool)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let _ = match (format, time) {
        (LogFormat::Json, true) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Json, false) => builder.json().flatten_event(true).without_time().try_init(),
        (LogFormat::Text, true) => builder.try_init(),
        (LogFormat::Text, false) => builder.without_time().try_init(),
    };
}

/// The syslog facility's number (RFC 5424 §6.2.1).
pub fn facility_code(name: &str) -> Option<u8> {
    const NAMES: [&str; 12] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp",
    ];
    let name = name.to_ascii_lowercase();
    if let Some(i) = NAMES.iter().position(|n| *n == name) {
        return u8::try_from(i).ok();
    }
    let local: u8 = name.strip_prefix("local")?.parse().ok()?;
    (local <= 7).then_some(16 + local)
}

/// Where `log.syslog.destination` points.
pub enum SyslogTarget<'a> {
    /// A Unix datagram socket such as `/dev/log`.
    Unix(&'a str),
    Udp(std::net::SocketAddr),
}

/// `None` when the destination is neither an absolute socket path nor an address:port.
pub fn syslog_target(destination: &str) -> Option<SyslogTarget<'_>> {
    if destination.starts_with('/') {
        return Some(SyslogTarget::Unix(destination));
    }
    destination.parse().ok().map(SyslogTarget::Udp)
}

enum Socket {
    Unix(UnixDatagram),
    Udp(UdpSocket),
}

/// One datagram per log event, in the format syslog(3) sends to `/dev/log`:
/// `<PRI>TAG[PID]: message`. Sends never block the caller: when the syslog daemon falls behind,
/// events are dropped and counted (reported in the next event that gets through).
struct Syslog {
    socket: Socket,
    facility: u8,
    tag: String,
    dropped: AtomicU64,
}

impl Syslog {
    fn connect(config: &SyslogConfig) -> anyhow::Result<Self> {
        let facility = facility_code(&config.facility).with_context(|| {
            format!(
                "log.syslog.facility: unknown facility {:?}",
                config.facility
            )
        })?;
        let target = syslog_target(&config.destination).with_context(|| {
            format!(
                "log.syslog.destination: {:?} is not a socket path or address:port",
                config.destination
            )
        })?;
        let socket = match target {
            SyslogTarget::Unix(path) => {
                let socket =
                    UnixDatagram::unbound().context("log.syslog: cannot create a socket")?;
                socket
                    .connect(path)
                    .with_context(|| format!("log.syslog.destination: cannot connect to {path}"))?;
                socket.set_nonblocking(true)?;
                Socket::Unix(socket)
            }
            SyslogTarget::Udp(target) => {
                let local = if target.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let socket =
                    UdpSocket::bind(local).context("log.syslog: cannot create a socket")?;
                socket
                    .connect(target)
                    .with_context(|| format!("log.syslog.destination: cannot reach {target}"))?;
                socket.set_nonblocking(true)?;
                Socket::Udp(socket)
            }
        };
        let tag = if config.pid {
            format!("{}[{}]", config.tag, std::process::id())
        } else {
            config.tag.clone()
        };
        Ok(Self {
            socket,
            facility,
            tag,
            dropped: AtomicU64::new(0),
        })
    }

    fn send(&self, severity: u8, message: &[u8]) {
        let message = message.strip_suffix(b"\n").unwrap_or(message);
        let mut datagram = format!("<{}>{}: ", self.facility * 8 + severity, self.tag).into_bytes();
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            datagram.extend_from_slice(format!("({dropped} log lines dropped) ").as_bytes());
        }
        datagram.extend_from_slice(message);
        let sent = match &self.socket {
            Socket::Unix(s) => s.send(&datagram),
            Socket::Udp(s) => s.send(&datagram),
        };
        if sent.is_err() {
            self.dropped.fetch_add(dropped + 1, Ordering::Relaxed);
        }
    }
}

/// The syslog severity of a tracing level.
fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Collects one event's text; sends it when the formatter is done with it.
struct SyslogLine {
    syslog: Arc<Syslog>,
    severity: u8,
    buffer: Vec<u8>,
}

impl Write for SyslogLine {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        if !self.buffer.is_empty() {
            self.syslog.send(self.severity, &self.buffer);
        }
    }
}

/// The formatter's handle on the syslog socket.
struct SyslogWriter(Arc<Syslog>);

impl<'a> MakeWriter<'a> for SyslogWriter {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> SyslogLine {
        SyslogLine {
            syslog: self.0.clone(),
            severity: 6,
            buffer: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SyslogLine {
        SyslogLine {
            syslog: self.0.clone(),
            severity: severity(meta.level()),
            buffer: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_names_or_syslog_severities() {
        // ContainerSSH's numbers: 7 = debug ... 0 = emergency, as its names map.
        let numbers = [
            (7, "debug"),
            (6, "info"),
            (5, "notice"),
            (4, "warning"),
            (3, "error"),
            (2, "critical"),
            (1, "alert"),
            (0, "emergency"),
        ];
        for (number, name) in numbers {
            assert_eq!(
                filter_level(&number.to_string()),
                filter_level(name),
                "{number}"
            );
            assert!(filter_level(name).is_some(), "{name}");
        }
        assert_eq!(filter_level("7"), Some("debug"));
        assert_eq!(filter_level("5"), Some("info"));
        assert_eq!(filter_level("4"), Some("warn"));
        assert_eq!(filter_level("0"), Some("error"));
        // ContainerSSH writes `crit` and `emerg`.
        assert_eq!(filter_level("crit"), Some("error"));
        assert_eq!(filter_level("emerg"), Some("error"));
        assert_eq!(filter_level("trace"), Some("trace"));
        for bad in ["8", "-1", "99", "", "verbose", "7.5"] {
            assert_eq!(filter_level(bad), None, "{bad}");
        }
    }

    #[test]
    fn facilities_have_their_numbers() {
        assert_eq!(facility_code("kern"), Some(0));
        assert_eq!(facility_code("auth"), Some(4));
        assert_eq!(facility_code("AUTHPRIV"), Some(10));
        assert_eq!(facility_code("local7"), Some(23));
        assert_eq!(facility_code("local8"), None);
        assert_eq!(facility_code("bogus"), None);
    }

    #[test]
    fn one_event_is_one_datagram_with_its_priority() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let syslog = Arc::new(
            Syslog::connect(&SyslogConfig {
                destination: path.to_string_lossy().into_owned(),
                facility: "local3".into(),
                tag: "cssh".into(),
                pid: true,
            })
            .unwrap(),
        );
        let mut line = SyslogLine {
            syslog: syslog.clone(),
            severity: severity(&Level::WARN),
            buffer: Vec::new(),
        };
        line.write_all(b"WARN disk ").unwrap();
        line.write_all(b"almost full\n").unwrap();
        drop(line);
        let mut buf = [0u8; 512];
        let n = receiver.recv(&mut buf).unwrap();
        let expected = format!("<156>cssh[{}]: WARN disk almost full", std::process::id());
        assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), expected);
    }
}
