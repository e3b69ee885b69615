//! `containerssh-helper`: run by the gateway inside a user's container (as an exec, as the
//! container's user) for each forwarded connection, so that the connection is made from the
//! container's own network namespace and file system.
//!
//! ```text
//! containerssh-helper tcp HOST PORT     # ssh -L / -D: connect to HOST:PORT
//! containerssh-helper unix PATH         # direct-streamlocal: connect to a Unix socket
//! containerssh-helper listen ...        # ssh -R, streamlocal-forward, agent (see listen.rs)
//! containerssh-helper join ...          # one connection a listener accepted
//! containerssh-helper spawner SOCKET    # the container's main process (see spawner.rs)
//! ```
//!
//! Once connected it writes `connected` first on stdout (or `error: ...` on stderr and exits 1). Then both
//! directions carry frames: a 4-byte big-endian length and that many bytes; a zero length is
//! EOF (from the gateway: shut the socket's write side, then say `eof` on stderr; to the
//! gateway: the socket's read side ended). Frames keep EOF exact whatever the container
//! engine does with stream ends. The end of stdin is the channel's close: the helper exits at
//! once, so no helper outlives its forward even if the other end never closes.
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod listen;
mod spawner;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame the gateway sends (its channel packets are smaller).
const MAX_FRAME: usize = 1 << 20;

/// A connected socket of either kind.
pub(crate) trait Socket: Read + Write + Send + 'static {
    fn shutdown_write(&self) -> io::Result<()>;
    fn try_clone_box(&self) -> io::Result<Box<dyn Socket>>;
}

impl Socket for TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn try_clone_box(&self) -> io::Result<Box<dyn Socket>> {
        Ok(Box::new(self.try_clone()?))
    }
}

impl Socket for UnixStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn try_clone_box(&self) -> io::Result<Box<dyn Socket>> {
        Ok(Box::new(self.try_clone()?))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let socket: io::Result<Box<dyn Socket>> = match args.as_slice() {
        [kind, host, port] if kind == "tcp" => match port.parse::<u16>() {
            Ok(port) => connect_tcp(host, port).map(|s| Box::new(s) as Box<dyn Socket>),
            Err(_) => Err(io::Error::other(format!("bad port {port:?}"))),
        },
        [kind, path] if kind == "unix" => {
            UnixStream::connect(path).map(|s| Box::new(s) as Box<dyn Socket>)
        }
        [mode, kind, address @ .., name, secret] if mode == "listen" => {
            return listen::listen(kind, address, name, secret)
        }
        [mode, name, secret, id] if mode == "join" => return listen::join(name, secret, id),
        [mode, socket] if mode == "spawner" => return spawner::serve(socket),
        _ => {
            eprintln!("usage: containerssh-helper tcp HOST PORT | unix PATH | listen KIND ADDRESS.. NAME SECRET | join NAME SECRET ID | spawner SOCKET");
            return ExitCode::from(2);
        }
    };
    let socket = match socket {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if !ready("connected") {
        return ExitCode::from(1);
    }
    relay(socket)
}

/// Says `word` first on stdout, ahead of any data (the gateway waits for it there); false if
/// nobody listens any more.
pub(crate) fn ready(word: &str) -> bool {
    let mut out = io::stdout().lock();
    writeln!(out, "{word}").and_then(|_| out.flush()).is_ok()
}

/// HOST as an address, `localhost`, a name in /etc/hosts, or else the system resolver.
pub(crate) fn connect_tcp(host: &str, port: u16) -> io::Result<TcpStream> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let candidates: Vec<SocketAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
        vec![SocketAddr::new(ip, port)]
    } else if host.eq_ignore_ascii_case("localhost") {
        vec![
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
        ]
    } else {
        let listed = hosts_file(host, port);
        if listed.is_empty() {
            (host, port).to_socket_addrs()?.collect()
        } else {
            listed
        }
    };
    let mut last = io::Error::other(format!("{host}: no address"));
    for addr in candidates {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = io::Error::new(e.kind(), format!("{addr}: {e}")),
        }
    }
    Err(last)
}

/// Addresses /etc/hosts gives `name` (a static binary cannot rely on the image's resolver
/// libraries).
fn hosts_file(name: &str, port: u16) -> Vec<SocketAddr> {
    let Ok(text) = std::fs::read_to_string("/etc/hosts") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?;
            let mut fields = line.split_whitespace();
            let ip: IpAddr = fields.next()?.parse().ok()?;
            fields
                .any(|n| n.eq_ignore_ascii_case(name))
                .then_some(SocketAddr::new(ip, port))
        })
        .collect()
}

/// Which halves are finished; the helper exits once both are.
#[derive(Default)]
struct Done {
    reading: bool,
    writing: bool,
}

pub(crate) fn relay(socket: Box<dyn Socket>) -> ExitCode {
    let done = Arc::new(Mutex::new(Done::default()));
    let reader = match socket.try_clone_box() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let done_reading = done.clone();
    std::thread::spawn(move || {
        let mut reader = reader;
        let mut stdout = io::stdout().lock();
        let mut chunk = vec![0u8; 32 * 1024];
        loop {
            let n = match reader.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            let header = (n as u32).to_be_bytes();
            if stdout.write_all(&header).is_err()
                || stdout.write_all(&chunk[..n]).is_err()
                || stdout.flush().is_err()
            {
                std::process::exit(0);
            }
            if n == 0 {
                break;
            }
        }
        finish(&done_reading, |d| d.reading = true);
    });
    let mut socket = socket;
    let mut stdin = io::stdin().lock();
    let mut buffer = Vec::new();
    loop {
        let mut len = [0u8; 4];
        if stdin.read_exact(&mut len).is_err() {
            // The channel closed: nothing more to do, whatever the other end does.
            std::process::exit(0);
        }
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 {
            let _ = socket.shutdown_write();
            // Everything before the EOF is in the socket now: the gateway may close.
            eprintln!("eof");
            finish(&done, |d| d.writing = true);
            // Keep reading stdin: its end still means the channel closed.
            let mut rest = [0u8; 4096];
            while matches!(stdin.read(&mut rest), Ok(n) if n > 0) {}
            std::process::exit(0);
        }
        if len > MAX_FRAME {
            eprintln!("error: frame of {len} bytes");
            std::process::exit(1);
        }
        buffer.resize(len, 0);
        if stdin.read_exact(&mut buffer).is_err() {
            std::process::exit(0);
        }
        if socket.write_all(&buffer).is_err() {
            // The other end is gone; its EOF reaches the gateway through stdout. Nothing
            // more can pass, so an EOF the gateway sends later needs no waiting for.
            eprintln!("eof");
            let mut rest = [0u8; 4096];
            while matches!(stdin.read(&mut rest), Ok(n) if n > 0) {}
            std::process::exit(0);
        }
    }
}

fn finish(done: &Mutex<Done>, mark: impl FnOnce(&mut Done)) {
    let mut d = match done.lock() {
        Ok(d) => d,
        Err(poisoned) => poisoned.into_inner(),
    };
    mark(&mut d);
    if d.reading && d.writing {
        std::process::exit(0);
    }
}
