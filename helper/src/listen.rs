//! Listening inside the container (`ssh -R`, streamlocal-forward, the agent socket).
//!
//! ```text
//! containerssh-helper listen tcp HOST PORT NAME SECRET
//! containerssh-helper listen unix PATH NAME SECRET
//! containerssh-helper listen agent PATH NAME SECRET   # unix, in a fresh 0700 directory
//! containerssh-helper listen x11 DISPLAY XAUTHORITY PROTOCOL COOKIE NAME SECRET
//! containerssh-helper join NAME SECRET ID
//! ```
//!
//! The listener binds, says `listening` first on stdout (or `error: ...` on stderr and exits
//! 1), and then writes one line per accepted connection on stdout: `accept ID HOST PORT`. The gateway opens
//! a channel to the client and starts `join` for the connection (or writes `drop ID` on the
//! listener's stdin when the client refused it). `join` takes the accepted socket itself from
//! the listener over a private abstract Unix socket (`NAME`, checked with `SECRET`), as a file
//! descriptor, and then relays it exactly as a `tcp` or `unix` connection: so each forwarded
//! connection lives in its own process, tied to its own channel, and the listener holds
//! nothing of it. The end of the listener's stdin (the client cancelled the forward, or the
//! connection ended) closes the listening socket, removes a socket file it created, and exits.
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::mem::size_of;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{relay, Socket};

/// Accepted connections no `join` came for are closed after this long.
const UNCLAIMED: Duration = Duration::from_secs(60);
/// Most accepted connections waiting for their `join`; more are closed at once.
const MAX_WAITING: usize = 256;
/// How long a `join` may take to say what it wants.
const JOIN_READ: Duration = Duration::from_secs(10);

/// An accepted connection waiting for its `join`.
struct Waiting {
    fd: OwnedFd,
    tcp: bool,
    since: Instant,
}

type Pending = Arc<Mutex<HashMap<u64, Waiting>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

enum Bound {
    Tcp(TcpListener),
    /// An X display's port, and the authority file made for it (in a directory of its own).
    X11 {
        listener: TcpListener,
        xauthority: String,
    },
    Unix {
        listener: UnixListener,
        /// What to remove at the end: the socket file, and the directory made for it.
        path: String,
        made_dir: Option<String>,
    },
}

pub fn listen(kind: &str, address: &[String], name: &str, secret: &str) -> ExitCode {
    let bound = match bind(kind, address) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let joins = match UnixAddr::from_abstract_name(name.as_bytes())
        .and_then(|a| UnixListener::bind_addr(&a))
    {
        Ok(l) => l,
        Err(e) => {
            cleanup(&bound);
            eprintln!("error: private socket: {e}");
            return ExitCode::from(1);
        }
    };
    if !crate::ready("listening") {
        cleanup(&bound);
        return ExitCode::from(1);
    }
    let pending: Pending = Arc::default();
    let stdout = Arc::new(Mutex::new(io::stdout()));
    {
        let pending = pending.clone();
        let secret = secret.to_string();
        std::thread::spawn(move || serve_joins(joins, pending, &secret));
    }
    let accept = match accepter(&bound) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    {
        let (pending, stdout) = (pending.clone(), stdout.clone());
        std::thread::spawn(move || loop {
            match accept() {
                Ok((fd, tcp, host, port)) => announce(&pending, &stdout, fd, tcp, &host, port),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        });
    }
    // The gateway's instructions; their end is the end of the forward.
    for line in BufReader::new(io::stdin().lock()).lines() {
        let Ok(line) = line else { break };
        if let Some(id) = line
            .strip_prefix("drop ")
            .and_then(|id| id.trim().parse().ok())
        {
            lock(&pending).remove(&id);
        }
    }
    cleanup(&bound);
    std::process::exit(0)
}

/// One accepted connection: its socket, whether it is TCP, and the peer (empty for Unix).
type Accepted = (OwnedFd, bool, String, u16);

/// Accepts the next connection on a copy of the bound socket (for the accepting thread).
fn accepter(bound: &Bound) -> io::Result<impl Fn() -> io::Result<Accepted> + Send + 'static> {
    enum Listener {
        Tcp(TcpListener),
        Unix(UnixListener),
    }
    let listener = match bound {
        Bound::Tcp(l) | Bound::X11 { listener: l, .. } => Listener::Tcp(l.try_clone()?),
        Bound::Unix { listener, .. } => Listener::Unix(listener.try_clone()?),
    };
    Ok(move || match &listener {
        Listener::Tcp(l) => {
            let (s, peer) = l.accept()?;
            let _ = s.set_nodelay(true);
            Ok((OwnedFd::from(s), true, peer.ip().to_string(), peer.port()))
        }
        Listener::Unix(l) => {
            let (s, _) = l.accept()?;
            Ok((OwnedFd::from(s), false, String::new(), 0))
        }
    })
}

fn bind(kind: &str, address: &[String]) -> io::Result<Bound> {
    match (kind, address) {
        ("tcp", [host, port]) => {
            let port: u16 = port
                .parse()
                .map_err(|_| io::Error::other(format!("bad port {port:?}")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            // As sshd: an empty address or `*` is every address, `localhost` the loopback.
            let l = match host {
                "" | "*" | "0.0.0.0" => TcpListener::bind(("0.0.0.0", port)),
                "::" => TcpListener::bind(("::", port)),
                "localhost" => TcpListener::bind(("127.0.0.1", port)),
                other => TcpListener::bind((other, port)),
            }?;
            Ok(Bound::Tcp(l))
        }
        ("x11", [display, xauthority, protocol, cookie]) => {
            let number: u16 = display
                .parse()
                .ok()
                .filter(|n| *n < 1000)
                .ok_or_else(|| io::Error::other(format!("bad display {display:?}")))?;
            // X clients of display N connect to TCP port 6000 + N.
            let l = TcpListener::bind(("127.0.0.1", 6000 + number))?;
            write_xauthority(xauthority, display, protocol, cookie)?;
            Ok(Bound::X11 {
                listener: l,
                xauthority: xauthority.clone(),
            })
        }
        ("unix" | "agent", [path]) => {
            let mut made_dir = None;
            if kind == "agent" {
                let dir = std::path::Path::new(path)
                    .parent()
                    .ok_or_else(|| io::Error::other("the agent socket needs a directory"))?;
                std::fs::DirBuilder::new().mode(0o700).create(dir)?;
                made_dir = Some(dir.to_string_lossy().into_owned());
            }
            // The socket file is the user's alone (sshd's StreamLocalBindMask 0177).
            let old = unsafe { libc::umask(0o177) };
            let bound = UnixListener::bind(path);
            unsafe { libc::umask(old) };
            match bound {
                Ok(listener) => Ok(Bound::Unix {
                    listener,
                    path: path.clone(),
                    made_dir,
                }),
                Err(e) => {
                    if let Some(dir) = made_dir {
                        let _ = std::fs::remove_dir(dir);
                    }
                    Err(io::Error::new(e.kind(), format!("{path}: {e}")))
                }
            }
        }
        _ => Err(io::Error::other(
            "usage: listen tcp HOST PORT | unix PATH | agent PATH",
        )),
    }
}

fn cleanup(bound: &Bound) {
    match bound {
        Bound::Unix { path, made_dir, .. } => {
            let _ = std::fs::remove_file(path);
            if let Some(dir) = made_dir {
                let _ = std::fs::remove_dir(dir);
            }
        }
        Bound::X11 { xauthority, .. } => {
            let _ = std::fs::remove_file(xauthority);
            if let Some(dir) = std::path::Path::new(xauthority).parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
        Bound::Tcp(_) => {}
    }
}

/// An X authority file (as `xauth` writes) with one entry for any address of `display`: the
/// cookie the client's ssh checks and replaces with the real one. Its directory is made 0700.
fn write_xauthority(path: &str, display: &str, protocol: &str, cookie: &str) -> io::Result<()> {
    let cookie = (0..cookie.len())
        .step_by(2)
        .map(|i| {
            cookie
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| io::Error::other("the X11 cookie is not hexadecimal"))?;
    let dir = std::path::Path::new(path)
        .parent()
        .ok_or_else(|| io::Error::other("the X authority file needs a directory"))?;
    std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    let mut entry = Vec::new();
    // FamilyWild: the entry matches the display whatever address the client used.
    entry.extend_from_slice(&0xffffu16.to_be_bytes());
    for field in [&b""[..], display.as_bytes(), protocol.as_bytes(), &cookie] {
        let len = u16::try_from(field.len()).map_err(|_| io::Error::other("field too long"))?;
        entry.extend_from_slice(&len.to_be_bytes());
        entry.extend_from_slice(field);
    }
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(&entry)
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Keeps an accepted connection for its `join` and tells the gateway about it.
fn announce(
    pending: &Pending,
    stdout: &Mutex<io::Stdout>,
    fd: OwnedFd,
    tcp: bool,
    host: &str,
    port: u16,
) {
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    {
        let mut waiting = lock(pending);
        waiting.retain(|_, w| w.since.elapsed() < UNCLAIMED);
        if waiting.len() >= MAX_WAITING {
            return;
        }
        waiting.insert(
            id,
            Waiting {
                fd,
                tcp,
                since: Instant::now(),
            },
        );
    }
    let host = if host.is_empty() { "-" } else { host };
    let mut out = lock(stdout);
    if writeln!(out, "accept {id} {host} {port}")
        .and_then(|_| out.flush())
        .is_err()
    {
        // Nobody to tell: the gateway is gone.
        std::process::exit(0);
    }
}

/// Hands accepted connections to the `join` processes that ask with the secret, each in a
/// thread of its own so that a slow asker holds up nobody else.
fn serve_joins(joins: UnixListener, pending: Pending, secret: &str) {
    let secret: Arc<str> = secret.into();
    for conn in joins.incoming() {
        let Ok(conn) = conn else { continue };
        let (pending, secret) = (pending.clone(), secret.clone());
        std::thread::spawn(move || hand_over(conn, &pending, &secret));
    }
}

fn hand_over(mut conn: UnixStream, pending: &Pending, secret: &str) {
    let _ = conn.set_read_timeout(Some(JOIN_READ));
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 512 {
        match conn.read(&mut byte) {
            Ok(1) if byte[0] != b'\n' => line.push(byte[0]),
            _ => break,
        }
    }
    let line = String::from_utf8_lossy(&line);
    let mut words = line.split(' ');
    if words.next() != Some(secret) {
        return;
    }
    let Some(id) = words.next().and_then(|id| id.parse::<u64>().ok()) else {
        return;
    };
    let Some(waiting) = lock(pending).remove(&id) else {
        return;
    };
    let tag = if waiting.tcp { b't' } else { b'u' };
    // Our copy closes when `waiting` drops; the join process holds the connection then.
    let _ = send_fd(&conn, waiting.fd.as_raw_fd(), tag);
}

pub fn join(name: &str, secret: &str, id: &str) -> ExitCode {
    let taken = UnixAddr::from_abstract_name(name.as_bytes())
        .and_then(|a| UnixStream::connect_addr(&a))
        .and_then(|mut s| {
            s.write_all(format!("{secret} {id}\n").as_bytes())?;
            recv_fd(&s)
        });
    let socket: Box<dyn Socket> = match taken {
        Ok(Some((fd, b't'))) => Box::new(TcpStream::from(fd)),
        Ok(Some((fd, _))) => Box::new(UnixStream::from(fd)),
        Ok(None) => {
            eprintln!("error: the connection is no longer waiting");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if !crate::ready("connected") {
        return ExitCode::from(1);
    }
    relay(socket)
}

/// Control-message buffer, aligned for `cmsghdr` and large enough for one descriptor.
#[repr(C, align(8))]
pub(crate) struct Control(pub(crate) [u8; 64]);

fn send_fd(sock: &UnixStream, fd: RawFd, tag: u8) -> io::Result<()> {
    send_with_fd(sock.as_raw_fd(), &[tag], fd)
}

/// Sends `message` on socket `sock` with descriptor `fd` attached.
pub(crate) fn send_with_fd(sock: RawFd, message: &[u8], fd: RawFd) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: message.as_ptr() as *mut libc::c_void,
        iov_len: message.len(),
    };
    let mut control = Control([0; 64]);
    // SAFETY: the message points at live buffers of the stated sizes for the call's length;
    // the control buffer is aligned and larger than CMSG_SPACE of one descriptor.
    unsafe {
        let space = libc::CMSG_SPACE(size_of::<RawFd>() as u32) as usize;
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(io::Error::other("no room for the descriptor"));
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        if libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The descriptor and tag `send_fd` sent; None when the listener closed without one.
fn recv_fd(sock: &UnixStream) -> io::Result<Option<(OwnedFd, u8)>> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = Control([0; 64]);
    // SAFETY: as in send_fd; a descriptor is taken only from an SCM_RIGHTS message of the
    // expected length, and it is ours to own (the kernel installed it, close-on-exec).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = control.0.len() as _;
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(None);
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
            || (*cmsg).cmsg_len as usize != libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize
        {
            return Ok(None);
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        Ok(Some((OwnedFd::from_raw_fd(fd), byte[0])))
    }
}
