//! `containerssh-helper spawner SOCKET`: the container's main process when the gateway shares
//! a directory with it (a local Docker engine). It connects to the gateway's socket there and
//! starts the session programs it is asked for, with the standard streams the gateway passes
//! along (pipes the gateway reads and writes directly), so no `docker exec` and no engine
//! stream sits between a program and its SSH channel.
//!
//! The socket is SOCK_SEQPACKET: one message per packet, integers big-endian.
//!
//! ```text
//! helper  -> gateway  'H' "containerssh-spawner/1"            once, after connecting
//! gateway -> helper   'W'                                      accepted: from now on the
//!                                                              gateway's end closing ends the
//!                                                              helper
//! gateway -> helper   'S' id:u64 argc:u32 (len:u32 bytes)*     start a program; three fds
//!                         envc:u32 (len:u32 bytes)*            (stdin, stdout, stderr) ride
//!                                                              along as SCM_RIGHTS
//! gateway -> helper   'K' id:u64 signal:u32                    signal its process group
//! gateway -> helper   'C' id:u64 kind:u8 (len:u32 bytes)*      connect from inside: kind 0
//!                                                              TCP (host, port), 1 Unix (path)
//! helper  -> gateway  'D' id:u64                               connected; the socket rides
//!                                                              along as SCM_RIGHTS
//! helper  -> gateway  'R' id:u64 pid:u32                       started
//! helper  -> gateway  'F' id:u64 message                       could not start
//! helper  -> gateway  'X' id:u64 how:u8 value:u32              ended: how 0 = exit status,
//!                                                              1 = killed by signal `value`
//! ```
//!
//! The helper exits when the gateway's end closes (the container then stops) and on SIGTERM.
//! If the gateway gave up waiting for it (it then puts `exec-fallback` beside the socket before
//! it stops listening), the helper stays as the container's idle main process and the gateway
//! starts programs with `docker exec`; if the gateway is simply gone, the helper exits. It reaps
//! every child, orphans included (it is PID 1, or else a child subreaper).
use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Condvar, Mutex};

/// Largest message the gateway sends (it falls back to `docker exec` for larger requests).
const MAX_MESSAGE: usize = 256 * 1024;
pub const HELLO: &[u8] = b"Hcontainerssh-spawner/1";

pub fn serve(path: &str) -> ExitCode {
    // SIGTERM (docker stop) ends the helper, and so the container; PID 1 would ignore it
    // without a handler.
    extern "C" fn on_term(_: libc::c_int) {
        unsafe { libc::_exit(0) };
    }
    unsafe {
        // Whatever an entrypoint left: children's ends must be seen, SIGTERM must arrive.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        // Orphaned grandchildren come to us when we are not PID 1 (docker run --init).
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let children = Arc::new(Children::default());
    let socket = match connect(path).and_then(|s| send(&s, HELLO).map(|_| Arc::new(s))) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("containerssh-helper: cannot reach the gateway at {path}: {e}");
            return idle_if_asked(path, children);
        }
    };
    {
        let (socket, children) = (socket.clone(), children.clone());
        std::thread::spawn(move || reap(Some(&socket), &children));
    }
    let mut welcomed = false;
    let mut buffer = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, fds) = match receive(&socket, &mut buffer) {
            Ok(Some(m)) => m,
            // The gateway is gone: so is the reason for this container.
            Ok(None) | Err(_) if welcomed => return ExitCode::SUCCESS,
            // It gave up waiting before it took this connection (its programs come as execs),
            // or died before it could.
            Ok(None) | Err(_) => return idle_if_asked(path, children),
        };
        let message = &buffer[..n];
        match message.first() {
            Some(b'W') => welcomed = true,
            Some(b'S') => start(&socket, &children, &message[1..], fds),
            Some(b'C') => connect_for(&socket, &message[1..]),
            Some(b'K') => {
                let mut r = Reader(&message[1..]);
                if let (Some(id), Some(signal)) = (r.u64(), r.u32()) {
                    children.signal(id, signal as i32);
                }
            }
            _ => {}
        }
    }
}

/// The container's idle main process if the gateway said it starts programs with `docker exec`
/// (reaps what they leave, ends on SIGTERM); otherwise the gateway is gone: exit.
fn idle_if_asked(socket_path: &str, children: Arc<Children>) -> ExitCode {
    let marker = std::path::Path::new(socket_path).with_file_name("exec-fallback");
    if !marker.exists() {
        return ExitCode::from(1);
    }
    std::thread::spawn(move || reap(None, &children));
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Programs started and not yet reaped: id by pid.
#[derive(Default)]
struct Children {
    running: Mutex<HashMap<u32, u64>>,
    any: Condvar,
}

impl Children {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, u64>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn signal(&self, id: u64, signal: i32) {
        let running = self.lock();
        if let Some((&pid, _)) = running.iter().find(|(_, &i)| i == id) {
            // Its process group (a shell's pipeline), else the process itself.
            unsafe {
                if libc::kill(-(pid as i32), signal) != 0 {
                    libc::kill(pid as i32, signal);
                }
            }
        }
    }
}

fn start(socket: &OwnedFd, children: &Children, body: &[u8], fds: Vec<OwnedFd>) {
    let mut r = Reader(body);
    let Some(id) = r.u64() else { return };
    let fail = |message: &str| {
        let mut out = vec![b'F'];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(message.as_bytes());
        let _ = send(socket, &out);
    };
    let (Some(argv), Some(env)) = (r.strings(), r.strings()) else {
        return fail("malformed request");
    };
    let Ok::<[OwnedFd; 3], _>([stdin, stdout, stderr]) = fds.try_into() else {
        return fail("expected three file descriptors");
    };
    let Some((program, args)) = argv.split_first() else {
        return fail("empty command");
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .process_group(0);
    for entry in env {
        let bytes = entry.into_vec();
        if let Some(eq) = bytes.iter().position(|&b| b == b'=') {
            let (key, value) = bytes.split_at(eq);
            command.env(
                OsString::from_vec(key.to_vec()),
                OsString::from_vec(value[1..].to_vec()),
            );
        }
    }
    // Held across the start, so the reaper cannot see this child's end before it is listed.
    let mut running = children.lock();
    match command.spawn() {
        Ok(child) => {
            running.insert(child.id(), id);
            children.any.notify_one();
            drop(running);
            let mut out = vec![b'R'];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&child.id().to_be_bytes());
            let _ = send(socket, &out);
        }
        Err(e) => {
            drop(running);
            fail(&format!("{}: {e}", program.to_string_lossy()));
        }
    }
}

/// Connects to a forward's destination from inside the container (its own thread: a connect
/// may take seconds) and hands the socket to the gateway, which then talks to it directly.
fn connect_for(socket: &Arc<OwnedFd>, body: &[u8]) {
    let mut r = Reader(body);
    let (Some(id), Some(kind), Some(args)) = (r.u64(), r.take(1).map(|k| k[0]), r.strings()) else {
        return;
    };
    let fail = move |socket: &OwnedFd, message: &str| {
        let mut out = vec![b'F'];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(message.as_bytes());
        let _ = send(socket, &out);
    };
    let shared = socket.clone();
    // A thread per connect (bounded by the container's pids limit: a refusal is an answer).
    let started = std::thread::Builder::new().spawn(move || {
        let socket = shared;
        let args: Vec<String> = args
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let connected: io::Result<OwnedFd> = match (kind, args.as_slice()) {
            (0, [host, port]) => match port.parse::<u16>() {
                Ok(port) => crate::connect_tcp(host, port).map(OwnedFd::from),
                Err(_) => Err(io::Error::other(format!("bad port {port:?}"))),
            },
            (1, [path]) => std::os::unix::net::UnixStream::connect(path).map(OwnedFd::from),
            _ => Err(io::Error::other("malformed request")),
        };
        let mut out = Vec::with_capacity(64);
        match connected {
            Ok(fd) => {
                out.push(b'D');
                out.extend_from_slice(&id.to_be_bytes());
                let _ = crate::listen::send_with_fd(socket.as_raw_fd(), &out, fd.as_raw_fd());
            }
            Err(e) => fail(&socket, &e.to_string()),
        }
    });
    if let Err(e) = started {
        fail(socket, &format!("cannot start a thread: {e}"));
    }
}

/// Waits for every child (orphans too) and reports the programs' ends.
///
/// A child's end is first only looked at (WNOWAIT) and reaped under the lock `start` holds
/// while it starts a program: the standard library reaps a child whose exec failed itself,
/// and must not find it gone.
fn reap(socket: Option<&OwnedFd>, children: &Children) {
    loop {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc != 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                // Nothing to wait for until the next program starts.
                let running = children.lock();
                if running.is_empty() {
                    let _ = children
                        .any
                        .wait_timeout(running, std::time::Duration::from_secs(1));
                }
            }
            continue;
        }
        let pid = unsafe { info.si_pid() };
        let mut running = children.lock();
        let mut status = 0;
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } != pid {
            // Reaped by the standard library (its exec failed).
            continue;
        }
        let Some(id) = running.remove(&(pid as u32)) else {
            continue;
        };
        drop(running);
        let (how, value) = if libc::WIFSIGNALED(status) {
            (1u8, libc::WTERMSIG(status) as u32)
        } else {
            (0u8, libc::WEXITSTATUS(status) as u32)
        };
        let mut out = vec![b'X'];
        out.extend_from_slice(&id.to_be_bytes());
        out.push(how);
        out.extend_from_slice(&value.to_be_bytes());
        if let Some(socket) = socket {
            let _ = send(socket, &out);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn strings(&mut self) -> Option<Vec<OsString>> {
        let count = self.u32()? as usize;
        let mut out = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let len = self.u32()? as usize;
            out.push(OsString::from_vec(self.take(len)?.to_vec()));
        }
        Some(out)
    }
}

fn connect(path: &str) -> io::Result<OwnedFd> {
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_bytes();
    if bytes.len() >= address.sun_path.len() {
        return Err(io::Error::other("socket path too long"));
    }
    for (slot, b) in address.sun_path.iter_mut().zip(bytes) {
        *slot = *b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    let rc = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            (&address as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

fn send(socket: &OwnedFd, message: &[u8]) -> io::Result<()> {
    loop {
        let n = unsafe {
            libc::send(
                socket.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One message and the descriptors that came with it; `None` at the end of the connection.
fn receive(socket: &OwnedFd, buffer: &mut [u8]) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    const MAX_FDS: usize = 3;
    let mut control = crate::listen::Control([0u8; 64]);
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    loop {
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = control.0.len() as _;
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(None);
        }
        let mut fds = Vec::new();
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                        / std::mem::size_of::<RawFd>();
                    for i in 0..count {
                        // Every descriptor received is owned (and so closed) here, even
                        // beyond the three a request may carry.
                        fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        if fds.len() > MAX_FDS || msg.msg_flags & libc::MSG_TRUNC != 0 {
            // Not a request this helper understands: drop it (and its descriptors).
            continue;
        }
        return Ok(Some((n as usize, fds)));
    }
}
