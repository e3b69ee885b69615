//! `audit.format: binary`: ContainerSSH's own audit log format, readable with its
//! `containerssh-auditlog-decoder` and its Go library (`auditlog/codec`).
//!
//! A file per connection, named after the connection ID without an extension, as ContainerSSH
//! names it. Layout (ContainerSSH's `internal/auditlog/FORMAT.md`, version 2 as its encoder
//! writes it today):
//!
//! - a 40-byte header: `ContainerSSH-Auditlog` padded with zero bytes to 32 bytes, then the
//!   format version (2) as a little-endian u64;
//! - a gzip stream holding one CBOR map per message, one after the other (version 1 had one
//!   array; version 2 is a sequence). Each message is `{connectionId: text, timestamp: Unix
//!   nanoseconds, type: the message type number, payload: a map or null, channelId: uint or
//!   null}`, with the keys and payload field names of ContainerSSH's Go structures (their
//!   `json` tags, which its CBOR library uses; the field name where there is no tag) in their
//!   order, `[]byte` fields as byte strings.
//!
//! Like ContainerSSH's encoder, the gzip stream is flushed (a sync flush) after each batch of
//! messages and never finished: the file decodes up to its last flushed message at any time,
//! and ContainerSSH's decoder expects exactly that (it reads until the compressed data ends
//! unexpectedly, and reports a finished stream's end as an error). `zcat` reads it too but
//! warns "unexpected end of file".
//!
//! The messages are made from the gateway's audit events (see `Translator`), so what the
//! binary log holds is what the JSON log holds, in ContainerSSH's terms, plus the sessions'
//! input and output (`SessionIo` in `log`). Events ContainerSSH has no message type for are
//! left out. Passwords are never written (the `password` fields are null, as ContainerSSH
//! writes them without `intercept.passwords`), nor environment values.
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;

use ciborium::value::Value;
use flate2::{Compress, Compression, FlushCompress, Status};

/// The first bytes of the header; the rest of its 32 bytes are zeros.
pub const MAGIC: &[u8] = b"ContainerSSH-Auditlog";
/// The format version written: a sequence of messages (ContainerSSH's `CurrentVersion`).
pub const VERSION: u64 = 2;
/// The header's length: the padded magic and the version.
pub const HEADER_LEN: usize = 40;

/// ContainerSSH's message type numbers (`auditlog/message/type.go`), those the gateway writes.
pub mod types {
    pub const CONNECT: u32 = 0;
    pub const DISCONNECT: u32 = 1;
    pub const AUTH_PASSWORD: u32 = 100;
    pub const AUTH_PASSWORD_SUCCESSFUL: u32 = 101;
    pub const AUTH_PASSWORD_FAILED: u32 = 102;
    pub const AUTH_PASSWORD_BACKEND_ERROR: u32 = 103;
    pub const AUTH_PUBKEY: u32 = 104;
    pub const AUTH_PUBKEY_SUCCESSFUL: u32 = 105;
    pub const AUTH_PUBKEY_FAILED: u32 = 106;
    pub const AUTH_PUBKEY_BACKEND_ERROR: u32 = 107;
    pub const AUTH_KEYBOARD_INTERACTIVE_FAILED: u32 = 110;
    pub const AUTH_KEYBOARD_INTERACTIVE_BACKEND_ERROR: u32 = 111;
    pub const HANDSHAKE_SUCCESSFUL: u32 = 199;
    pub const REQUEST_REVERSE_FORWARD: u32 = 202;
    pub const REQUEST_STREAM_LOCAL: u32 = 204;
    pub const NEW_CHANNEL_SUCCESSFUL: u32 = 301;
    pub const NEW_CHANNEL_FAILED: u32 = 302;
    pub const NEW_FORWARD_CHANNEL: u32 = 303;
    pub const NEW_FORWARD_STREAM_LOCAL_CHANNEL: u32 = 306;
    pub const CHANNEL_REQUEST_UNKNOWN_TYPE: u32 = 400;
    pub const CHANNEL_REQUEST_SET_ENV: u32 = 402;
    pub const CHANNEL_REQUEST_EXEC: u32 = 403;
    pub const CHANNEL_REQUEST_PTY: u32 = 404;
    pub const CHANNEL_REQUEST_SHELL: u32 = 405;
    pub const CHANNEL_REQUEST_SIGNAL: u32 = 406;
    pub const CHANNEL_REQUEST_SUBSYSTEM: u32 = 407;
    pub const CHANNEL_REQUEST_WINDOW: u32 = 408;
    pub const CHANNEL_REQUEST_X11: u32 = 409;
    pub const CLOSE: u32 = 497;
    pub const EXIT_SIGNAL: u32 = 498;
    pub const EXIT: u32 = 499;
    pub const IO: u32 = 500;
    pub const REQUEST_FAILED: u32 = 501;
}

/// `PayloadIO.Stream`: the file descriptor numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
}

/// The file header.
pub fn header() -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..MAGIC.len()].copy_from_slice(MAGIC);
    header[32..].copy_from_slice(&VERSION.to_le_bytes());
    header
}

/// Nanoseconds since the Unix epoch (ContainerSSH's `time.Now().UnixNano()`).
pub fn nanos(at: std::time::SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn uint(n: u64) -> Value {
    Value::Integer(n.into())
}

/// A payload map, its fields in the Go structure's order.
fn payload(fields: Vec<(&str, Value)>) -> Value {
    Value::Map(fields.into_iter().map(|(k, v)| (text(k), v)).collect())
}

/// One message as ContainerSSH's `message.Message` is encoded.
pub fn message(
    connection_id: &str,
    timestamp: i64,
    kind: u32,
    payload: Option<Value>,
    channel: Option<u64>,
) -> Value {
    Value::Map(vec![
        (text("connectionId"), text(connection_id)),
        (text("timestamp"), Value::Integer(timestamp.into())),
        (text("type"), uint(kind.into())),
        (text("payload"), payload.unwrap_or(Value::Null)),
        (text("channelId"), channel.map(uint).unwrap_or(Value::Null)),
    ])
}

/// Appends the CBOR encoding of `value` to `out`.
pub fn encode(value: &Value, out: &mut Vec<u8>) -> std::io::Result<()> {
    ciborium::into_writer(value, &mut *out).map_err(std::io::Error::other)
}

/// A `PayloadIO` message: bytes of one stream of a session.
pub fn io_message(
    connection_id: &str,
    timestamp: i64,
    channel: u64,
    stream: Stream,
    data: &[u8],
) -> Value {
    message(
        connection_id,
        timestamp,
        types::IO,
        Some(payload(vec![
            ("stream", uint(stream as u64)),
            ("data", Value::Bytes(data.to_vec())),
        ])),
        Some(channel),
    )
}

/// A channel's close (type 497, no payload).
pub fn close_message(connection_id: &str, timestamp: i64, channel: u64) -> Value {
    message(connection_id, timestamp, types::CLOSE, None, Some(channel))
}

/// Turns the gateway's audit events (the JSON log's, see `ConnectionAudit::record`) into
/// ContainerSSH messages. Keeps what ContainerSSH numbers per channel: its requests.
pub struct Translator {
    connection_id: String,
    /// The next request ID per channel (ContainerSSH counts a channel's requests from 0).
    requests: HashMap<u64, u64>,
}

impl Translator {
    pub fn new(connection_id: &str) -> Self {
        Self {
            connection_id: connection_id.to_string(),
            requests: HashMap::new(),
        }
    }

    /// The channel is closed: its request count goes (a connection may open many sessions).
    pub fn forget(&mut self, channel: u64) {
        self.requests.remove(&channel);
    }

    fn message(&self, at: i64, kind: u32, payload: Option<Value>, channel: Option<u64>) -> Value {
        message(&self.connection_id, at, kind, payload, channel)
    }

    /// The messages of one event (none for events ContainerSSH has no message for).
    pub fn event(&mut self, at: i64, event: &str, fields: &serde_json::Value) -> Vec<Value> {
        let str_of = |key: &str| fields[key].as_str().unwrap_or_default();
        match event {
            "connect" => {
                // ContainerSSH records the IP address alone.
                let address = str_of("remoteAddress");
                let ip = address
                    .parse::<std::net::SocketAddr>()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_else(|_| address.to_string());
                let country = match str_of("country") {
                    "" => "XX",
                    c => c,
                };
                vec![self.message(
                    at,
                    types::CONNECT,
                    Some(payload(vec![
                        ("remoteAddr", text(&ip)),
                        ("country", text(country)),
                    ])),
                    None,
                )]
            }
            "disconnect" => vec![self.message(at, types::DISCONNECT, None, None)],
            "auth" => self.auth(at, fields),
            "request" => self.request(at, fields),
            "exit" => {
                let Some(channel) = fields["session"].as_u64() else {
                    return Vec::new();
                };
                if let Some(status) = fields["status"].as_u64() {
                    let status = u32::try_from(status).unwrap_or(u32::MAX);
                    vec![self.message(
                        at,
                        types::EXIT,
                        Some(payload(vec![("exitStatus", uint(status.into()))])),
                        Some(channel),
                    )]
                } else if let Some(signal) = fields["signal"].as_str() {
                    vec![self.message(
                        at,
                        types::EXIT_SIGNAL,
                        Some(payload(vec![
                            ("signal", text(signal)),
                            ("coreDumped", Value::Bool(false)),
                            ("errorMessage", text("")),
                            ("languageTag", text("")),
                        ])),
                        Some(channel),
                    )]
                } else {
                    // The exit is unknown: ContainerSSH writes nothing then either.
                    Vec::new()
                }
            }
            // `program`, `backend-error`, `recording`, `forward` (its results and byte counts):
            // ContainerSSH has no message for these; they stay in the JSON log.
            _ => Vec::new(),
        }
    }

    fn auth(&self, at: i64, fields: &serde_json::Value) -> Vec<Value> {
        let user = fields["username"].as_str().unwrap_or_default();
        let result = fields["result"].as_str().unwrap_or_default();
        let success = result == "success";
        // Wrong credentials (and a method the plugin does not take, and the rate limit) are
        // failures; the others mean the check could not be made (a backend error).
        let failed = matches!(result, "failure" | "unsupported" | "rate_limited");
        let with_password = |reason: Option<&str>| {
            let mut p = vec![("username", text(user)), ("password", Value::Null)];
            if let Some(reason) = reason {
                p.push(("reason", text(reason)));
            }
            payload(p)
        };
        // The gateway's log does not keep the offered key; ContainerSSH's `key` stays empty.
        let with_key = |reason: Option<&str>| {
            let mut p = vec![("username", text(user)), ("key", text(""))];
            if let Some(reason) = reason {
                p.push(("reason", text(reason)));
            }
            payload(p)
        };
        let mut messages = Vec::new();
        match fields["method"].as_str().unwrap_or_default() {
            "password" => {
                messages.push(self.message(
                    at,
                    types::AUTH_PASSWORD,
                    Some(with_password(None)),
                    None,
                ));
                messages.push(if success {
                    self.message(
                        at,
                        types::AUTH_PASSWORD_SUCCESSFUL,
                        Some(with_password(None)),
                        None,
                    )
                } else if failed {
                    self.message(
                        at,
                        types::AUTH_PASSWORD_FAILED,
                        Some(with_password(None)),
                        None,
                    )
                } else {
                    self.message(
                        at,
                        types::AUTH_PASSWORD_BACKEND_ERROR,
                        Some(with_password(Some(result))),
                        None,
                    )
                });
            }
            "publickey" => {
                messages.push(self.message(at, types::AUTH_PUBKEY, Some(with_key(None)), None));
                messages.push(if success {
                    self.message(
                        at,
                        types::AUTH_PUBKEY_SUCCESSFUL,
                        Some(with_key(None)),
                        None,
                    )
                } else if failed {
                    self.message(at, types::AUTH_PUBKEY_FAILED, Some(with_key(None)), None)
                } else {
                    self.message(
                        at,
                        types::AUTH_PUBKEY_BACKEND_ERROR,
                        Some(with_key(Some(result))),
                        None,
                    )
                });
            }
            // The challenge and answer messages would hold what the user typed: left out.
            "keyboard-interactive" if failed => messages.push(self.message(
                at,
                types::AUTH_KEYBOARD_INTERACTIVE_FAILED,
                // This payload has no json tags in ContainerSSH: the Go field name is the key.
                Some(payload(vec![("Username", text(user))])),
                None,
            )),
            "keyboard-interactive" if !success => messages.push(self.message(
                at,
                types::AUTH_KEYBOARD_INTERACTIVE_BACKEND_ERROR,
                Some(payload(vec![
                    ("username", text(user)),
                    ("reason", text(result)),
                ])),
                None,
            )),
            // GSSAPI has no ContainerSSH message; its success is the handshake's below.
            _ => {}
        }
        if success {
            messages.push(self.message(
                at,
                types::HANDSHAKE_SUCCESSFUL,
                Some(payload(vec![("username", text(user))])),
                None,
            ));
        }
        messages
    }

    fn request(&mut self, at: i64, fields: &serde_json::Value) -> Vec<Value> {
        let str_of = |key: &str| fields[key].as_str().unwrap_or_default();
        let u32_of = |key: &str| uint(fields[key].as_u64().unwrap_or(0).min(u32::MAX.into()));
        let denied = fields["verdict"] == "deny";
        let reason = str_of("reason");
        let session = fields["session"].as_u64();
        let kind = str_of("request");
        // Requests that open a channel or start a listener: forwards have no session channel.
        match kind {
            "session" => {
                let p = if denied {
                    (
                        types::NEW_CHANNEL_FAILED,
                        vec![("channelType", text("session")), ("reason", text(reason))],
                    )
                } else {
                    (
                        types::NEW_CHANNEL_SUCCESSFUL,
                        vec![("channelType", text("session"))],
                    )
                };
                return vec![self.message(at, p.0, Some(payload(p.1)), session)];
            }
            "direct-tcpip" | "direct-streamlocal" if denied => {
                let channel_type = if kind == "direct-tcpip" {
                    "direct-tcpip"
                } else {
                    "direct-streamlocal@openssh.com"
                };
                return vec![self.message(
                    at,
                    types::NEW_CHANNEL_FAILED,
                    Some(payload(vec![
                        ("channelType", text(channel_type)),
                        ("reason", text(reason)),
                    ])),
                    None,
                )];
            }
            // These payloads have no json tags in ContainerSSH: Go field names are the keys.
            "direct-tcpip" => {
                return vec![self.message(
                    at,
                    types::NEW_FORWARD_CHANNEL,
                    Some(payload(vec![
                        ("HostToConnect", text(str_of("host"))),
                        ("PortToConnect", u32_of("port")),
                        ("OriginatorHost", text("")),
                        ("OriginatorPort", uint(0)),
                    ])),
                    None,
                )];
            }
            "direct-streamlocal" => {
                return vec![self.message(
                    at,
                    types::NEW_FORWARD_STREAM_LOCAL_CHANNEL,
                    Some(payload(vec![("Path", text(str_of("path")))])),
                    None,
                )];
            }
            "tcpip-forward" => {
                return vec![self.message(
                    at,
                    types::REQUEST_REVERSE_FORWARD,
                    Some(payload(vec![
                        ("BindHost", text(str_of("host"))),
                        ("BindPort", u32_of("port")),
                    ])),
                    None,
                )];
            }
            "streamlocal-forward" => {
                return vec![self.message(
                    at,
                    types::REQUEST_STREAM_LOCAL,
                    Some(payload(vec![("Path", text(str_of("path")))])),
                    None,
                )];
            }
            _ => {}
        }
        // A request on a session channel.
        let Some(channel) = session else {
            return Vec::new();
        };
        let counter = self.requests.entry(channel).or_insert(0);
        let id = *counter;
        *counter += 1;
        let request_id = ("requestId", uint(id));
        let (kind, fields) = match kind {
            // Environment values are never recorded (they often carry tokens).
            "env" => (
                types::CHANNEL_REQUEST_SET_ENV,
                vec![
                    request_id,
                    ("name", text(str_of("name"))),
                    ("value", text("")),
                ],
            ),
            "exec" => (
                types::CHANNEL_REQUEST_EXEC,
                vec![request_id, ("program", text(str_of("command")))],
            ),
            "pty" => (
                types::CHANNEL_REQUEST_PTY,
                vec![
                    request_id,
                    ("term", text(str_of("term"))),
                    ("columns", u32_of("columns")),
                    ("rows", u32_of("rows")),
                    ("width", uint(0)),
                    ("height", uint(0)),
                    ("modelist", Value::Null),
                ],
            ),
            "shell" => (types::CHANNEL_REQUEST_SHELL, vec![request_id]),
            "signal" => (
                types::CHANNEL_REQUEST_SIGNAL,
                vec![request_id, ("signal", text(str_of("signal")))],
            ),
            "subsystem" => (
                types::CHANNEL_REQUEST_SUBSYSTEM,
                vec![request_id, ("subsystem", text(str_of("name")))],
            ),
            "window-change" => (
                types::CHANNEL_REQUEST_WINDOW,
                vec![
                    request_id,
                    ("columns", u32_of("columns")),
                    ("rows", u32_of("rows")),
                    ("width", uint(0)),
                    ("height", uint(0)),
                ],
            ),
            // The cookie is a secret and not kept.
            "x11" => (
                types::CHANNEL_REQUEST_X11,
                vec![
                    request_id,
                    ("singleConnection", Value::Bool(false)),
                    ("authProtocol", text("")),
                    ("cookie", text("")),
                    ("screen", uint(0)),
                ],
            ),
            // ContainerSSH has no agent forwarding: it records the request as unknown.
            "agent" => (
                types::CHANNEL_REQUEST_UNKNOWN_TYPE,
                vec![
                    request_id,
                    ("requestType", text("auth-agent-req@openssh.com")),
                    ("payload", Value::Null),
                ],
            ),
            _ => return Vec::new(),
        };
        let mut messages = vec![self.message(at, kind, Some(payload(fields)), Some(channel))];
        if denied {
            messages.push(self.message(
                at,
                types::REQUEST_FAILED,
                Some(payload(vec![
                    ("requestId", uint(id)),
                    ("reason", text(reason)),
                ])),
                Some(channel),
            ));
        }
        messages
    }
}

/// The binary file of one connection: the header, then a gzip stream that grows with each
/// batch (blocking I/O: used on the blocking pool). Memory: one compressor and one output
/// buffer, reused.
pub struct BinaryFile {
    file: File,
    compress: Compress,
    out: Vec<u8>,
}

/// gzip's member header as Go's `compress/gzip` writes it: deflate, no flags, no time,
/// unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

impl BinaryFile {
    /// Writes the header into `file` (new and empty).
    pub fn start(mut file: File) -> std::io::Result<Self> {
        let mut start = header().to_vec();
        start.extend_from_slice(&GZIP_HEADER);
        file.write_all(&start)?;
        Ok(Self {
            file,
            // Raw deflate: the gzip header is ours, and no trailer is ever written.
            compress: Compress::new(Compression::default(), false),
            out: Vec::new(),
        })
    }

    /// Compresses `messages` (CBOR), sync-flushes, and writes the result.
    pub fn append(&mut self, messages: &[u8]) -> std::io::Result<()> {
        self.out.clear();
        let mut input = messages;
        loop {
            if self.out.capacity() - self.out.len() < 1024 {
                self.out.reserve(input.len() / 2 + 16 * 1024);
            }
            let before = self.compress.total_in();
            let status = self
                .compress
                .compress_vec(input, &mut self.out, FlushCompress::Sync)
                .map_err(std::io::Error::other)?;
            let consumed = usize::try_from(self.compress.total_in() - before)
                .map_err(std::io::Error::other)?;
            input = &input[consumed.min(input.len())..];
            // Flushed once the input is in and the output had room to spare.
            let done = input.is_empty() && self.out.len() < self.out.capacity();
            if done || (matches!(status, Status::BufError) && input.is_empty()) {
                break;
            }
        }
        self.file.write_all(&self.out)?;
        // Big batches (output bursts) do not keep a big buffer for the connection's life.
        if self.out.capacity() > 256 * 1024 {
            self.out = Vec::new();
        }
        Ok(())
    }

    /// Makes what was written durable.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::io::Read;

    /// The expected header, spelled out from ContainerSSH's FORMAT.md: 32 bytes of
    /// `ContainerSSH-Auditlog\0...`, then version 2 as a little-endian u64.
    fn expected_header() -> Vec<u8> {
        let mut h = b"ContainerSSH-Auditlog".to_vec();
        h.resize(32, 0);
        h.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
        h
    }

    /// The gzip stream's content up to where it was flushed (it has no end, as ContainerSSH's).
    pub(in crate::audit) fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut decoder = flate2::read::GzDecoder::new(data);
        let mut buf = [0u8; 4096];
        loop {
            match decoder.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => panic!("gzip: {e}"),
            }
        }
        out
    }

    /// A sequence of CBOR items, as ContainerSSH's version 2 decoder reads them.
    fn items(mut data: &[u8]) -> Vec<Value> {
        let mut values = Vec::new();
        while !data.is_empty() {
            values.push(ciborium::from_reader::<Value, _>(&mut data).expect("a CBOR item"));
        }
        values
    }

    fn get<'a>(map: &'a Value, key: &str) -> &'a Value {
        map.as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some(key)))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {key} in {map:?}"))
    }

    fn keys(map: &Value) -> Vec<&str> {
        map.as_map()
            .map(|m| m.iter().filter_map(|(k, _)| k.as_text()).collect())
            .unwrap_or_default()
    }

    fn int(v: &Value) -> i128 {
        v.as_integer().map(i128::from).expect("an integer")
    }

    /// The messages of a small connection, encoded, written and read back as ContainerSSH's
    /// decoder does, compared field by field with the Go structures' layout.
    #[test]
    fn a_connection_is_written_in_containerssh_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0123456789abcdef");
        let mut t = Translator::new("0123456789abcdef");
        let mut batch = Vec::new();
        let add = |values: Vec<Value>, batch: &mut Vec<u8>| {
            for v in values {
                encode(&v, batch).unwrap();
            }
        };
        add(
            t.event(
                1_000,
                "connect",
                &serde_json::json!({"remoteAddress": "[2001:db8::1]:50022", "country": "DE"}),
            ),
            &mut batch,
        );
        add(
            t.event(
                2_000,
                "auth",
                &serde_json::json!({"username": "alice", "method": "password", "result": "success", "authenticatedUsername": "alice"}),
            ),
            &mut batch,
        );
        let file = File::create(&path).unwrap();
        let mut binary = BinaryFile::start(file).unwrap();
        binary.append(&batch).unwrap();
        // A second batch: the stream goes on after a flush.
        let mut batch = Vec::new();
        for (at, fields) in [
            (
                3_000,
                serde_json::json!({"session": 0, "request": "session", "openSessions": 0, "verdict": "allow"}),
            ),
            (
                4_000,
                serde_json::json!({"session": 0, "request": "exec", "command": "cat", "verdict": "allow"}),
            ),
            (
                4_500,
                serde_json::json!({"session": 0, "request": "signal", "signal": "KILL", "verdict": "deny", "reason": "no"}),
            ),
        ] {
            add(t.event(at, "request", &fields), &mut batch);
        }
        encode(
            &io_message("0123456789abcdef", 5_000, 0, Stream::Stdin, b"hi\n"),
            &mut batch,
        )
        .unwrap();
        encode(
            &io_message("0123456789abcdef", 6_000, 0, Stream::Stdout, b"hi\n"),
            &mut batch,
        )
        .unwrap();
        add(
            t.event(
                7_000,
                "exit",
                &serde_json::json!({"session": 0, "status": 3}),
            ),
            &mut batch,
        );
        encode(&close_message("0123456789abcdef", 8_000, 0), &mut batch).unwrap();
        add(
            t.event(9_000, "disconnect", &serde_json::json!({})),
            &mut batch,
        );
        binary.append(&batch).unwrap();
        binary.sync().unwrap();
        drop(binary);

        let data = std::fs::read(&path).unwrap();
        assert_eq!(&data[..40], expected_header().as_slice());
        // gzip magic, deflate, as Go's writer starts it.
        assert_eq!(&data[40..43], &[0x1f, 0x8b, 8]);
        let messages = items(&gunzip(&data[40..]));
        let types: Vec<i128> = messages.iter().map(|m| int(get(m, "type"))).collect();
        assert_eq!(
            types,
            vec![0, 100, 101, 199, 301, 403, 406, 501, 500, 500, 499, 497, 1]
        );
        for (m, at) in messages.iter().zip([
            1_000, 2_000, 2_000, 2_000, 3_000, 4_000, 4_500, 4_500, 5_000, 6_000, 7_000, 8_000,
            9_000,
        ]) {
            // message.Message's fields, in order, with their json tags as keys.
            assert_eq!(
                keys(m),
                vec!["connectionId", "timestamp", "type", "payload", "channelId"]
            );
            assert_eq!(get(m, "connectionId").as_text(), Some("0123456789abcdef"));
            assert_eq!(int(get(m, "timestamp")), at);
        }
        let connect = get(&messages[0], "payload");
        assert_eq!(keys(connect), vec!["remoteAddr", "country"]);
        assert_eq!(get(connect, "remoteAddr").as_text(), Some("2001:db8::1"));
        assert_eq!(get(connect, "country").as_text(), Some("DE"));
        assert!(get(&messages[0], "channelId").is_null());
        for m in &messages[1..3] {
            let p = get(m, "payload");
            assert_eq!(keys(p), vec!["username", "password"]);
            assert_eq!(get(p, "username").as_text(), Some("alice"));
            // Never a password.
            assert!(get(p, "password").is_null());
        }
        assert_eq!(
            get(get(&messages[3], "payload"), "username").as_text(),
            Some("alice")
        );
        let channel = get(&messages[4], "payload");
        assert_eq!(get(channel, "channelType").as_text(), Some("session"));
        assert_eq!(int(get(&messages[4], "channelId")), 0);
        let exec = get(&messages[5], "payload");
        assert_eq!(keys(exec), vec!["requestId", "program"]);
        assert_eq!(int(get(exec, "requestId")), 0);
        assert_eq!(get(exec, "program").as_text(), Some("cat"));
        assert_eq!(int(get(get(&messages[6], "payload"), "requestId")), 1);
        let failed = get(&messages[7], "payload");
        assert_eq!(keys(failed), vec!["requestId", "reason"]);
        assert_eq!(int(get(failed, "requestId")), 1);
        assert_eq!(get(failed, "reason").as_text(), Some("no"));
        for (m, stream) in [(&messages[8], 0), (&messages[9], 1)] {
            let p = get(m, "payload");
            assert_eq!(keys(p), vec!["stream", "data"]);
            assert_eq!(int(get(p, "stream")), stream);
            // []byte: a CBOR byte string.
            assert_eq!(
                get(p, "data").as_bytes().map(Vec::as_slice),
                Some(&b"hi\n"[..])
            );
            assert_eq!(int(get(m, "channelId")), 0);
        }
        assert_eq!(int(get(get(&messages[10], "payload"), "exitStatus")), 3);
        assert!(get(&messages[11], "payload").is_null());
        assert_eq!(int(get(&messages[11], "channelId")), 0);
        assert!(get(&messages[12], "payload").is_null());
        assert!(get(&messages[12], "channelId").is_null());
    }

    /// Byte for byte what Go's CBOR encoder writes for a `message.Message` (a definite-length
    /// map, its fields in struct order, integers in their shortest form), as in ContainerSSH's
    /// own sample log (`internal/auditlog/testdata`).
    #[test]
    fn a_message_encodes_as_go_encodes_it() {
        let mut out = Vec::new();
        encode(
            &message(
                "ab",
                1_625_081_015_047_410_200,
                types::DISCONNECT,
                None,
                None,
            ),
            &mut out,
        )
        .unwrap();
        let mut expected = vec![0xa5];
        expected.push(0x60 + 12);
        expected.extend_from_slice(b"connectionId");
        expected.extend_from_slice(&[0x62, b'a', b'b']);
        expected.push(0x60 + 9);
        expected.extend_from_slice(b"timestamp");
        expected.push(0x1b);
        expected.extend_from_slice(&1_625_081_015_047_410_200u64.to_be_bytes());
        expected.push(0x60 + 4);
        expected.extend_from_slice(b"type");
        expected.push(0x01);
        expected.push(0x60 + 7);
        expected.extend_from_slice(b"payload");
        expected.push(0xf6);
        expected.push(0x60 + 9);
        expected.extend_from_slice(b"channelId");
        expected.push(0xf6);
        assert_eq!(out, expected);
        // Type numbers above 23 take one or two more bytes, as in Go's output.
        let mut out = Vec::new();
        encode(&uint(types::REQUEST_FAILED.into()), &mut out).unwrap();
        assert_eq!(out, vec![0x19, 0x01, 0xf5]);
    }

    #[test]
    fn a_closed_channels_request_count_is_dropped() {
        let mut t = Translator::new("c");
        for session in 0..100u64 {
            let exec = serde_json::json!({"session": session, "request": "exec", "command": "true", "verdict": "allow"});
            assert!(!t.event(1, "request", &exec).is_empty());
            t.forget(session);
        }
        assert!(t.requests.is_empty());
        // An open channel keeps counting.
        let env =
            serde_json::json!({"session": 7, "request": "env", "name": "A", "verdict": "allow"});
        t.event(1, "request", &env);
        let m = t.event(1, "request", &env);
        assert_eq!(int(get(get(&m[0], "payload"), "requestId")), 1);
    }

    #[test]
    fn events_without_a_containerssh_message_are_left_out() {
        let mut t = Translator::new("c");
        for (event, fields) in [
            ("program", serde_json::json!({"session": 0, "shell": true})),
            (
                "backend-error",
                serde_json::json!({"session": 0, "error": "x"}),
            ),
            (
                "forward",
                serde_json::json!({"kind": "direct-tcpip", "result": "closed"}),
            ),
            ("exit", serde_json::json!({"session": 0, "unknown": "gone"})),
            (
                "auth",
                serde_json::json!({"username": "u", "method": "gssapi-with-mic", "result": "failure"}),
            ),
        ] {
            assert!(t.event(1, event, &fields).is_empty(), "{event}");
        }
        // A failed keyboard-interactive login: ContainerSSH's untagged field name.
        let m = t.event(
            1,
            "auth",
            &serde_json::json!({"username": "u", "method": "keyboard-interactive", "result": "failure"}),
        );
        assert_eq!(int(get(&m[0], "type")), 110);
        assert_eq!(keys(get(&m[0], "payload")), vec!["Username"]);
        // A backend that could not check a key.
        let m = t.event(
            1,
            "auth",
            &serde_json::json!({"username": "u", "method": "publickey", "result": "unavailable"}),
        );
        let types: Vec<i128> = m.iter().map(|m| int(get(m, "type"))).collect();
        assert_eq!(types, vec![104, 107]);
        assert_eq!(
            get(get(&m[1], "payload"), "reason").as_text(),
            Some("unavailable")
        );
    }
}
