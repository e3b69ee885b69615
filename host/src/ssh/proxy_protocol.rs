//! PROXY protocol (v1 text and v2 binary, as HAProxy's `send-proxy` and `send-proxy-v2` write
//! them) from trusted load balancers: the header names the real client, whose address then
//! serves for logs, audit, webhooks, metrics and rate limits.
//!
//! Only the header's bytes are read (never a byte of the SSH stream behind it); the read has a
//! deadline and a size limit, so a slow or endless header cannot hold a connection slot.
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

/// v2's signature; v1 starts with "PROXY ".
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// v1's longest line (spec: 107 bytes, CRLF included).
const V1_MAX: usize = 107;
/// The largest v2 header accepted (addresses plus a few TLVs; HAProxy's are far smaller).
const V2_MAX: usize = 4096;

/// Why a connection from a trusted proxy was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("the proxy sent no PROXY header (the stream starts with {0:?})")]
    Missing(String),
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    #[error("PROXY header longer than {0} bytes")]
    TooLong(usize),
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the connection really comes from.
#[derive(Debug, PartialEq, Eq)]
pub enum Origin {
    /// The client the proxy relayed.
    Client(SocketAddr),
    /// The proxy speaking for itself (v2 LOCAL, e.g. a health check; v1 UNKNOWN).
    Proxy,
}

pub fn is_trusted(peer: &SocketAddr, trusted: &[IpNet]) -> bool {
    let ip = match peer.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(std::net::IpAddr::V4)
            .unwrap_or(std::net::IpAddr::V6(v6)),
        ip => ip,
    };
    trusted.iter().any(|net| net.contains(&ip))
}

/// Reads the header a trusted proxy must send first.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    deadline: Duration,
) -> Result<Origin, HeaderError> {
    tokio::time::timeout(deadline, read(stream))
        .await
        .map_err(|_| HeaderError::Timeout(deadline))?
}

async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Origin, HeaderError> {
    let mut header = vec![0u8; V1_PREFIX.len()];
    stream.read_exact(&mut header).await?;
    if header == V1_PREFIX {
        // One line, byte by byte so nothing after its CRLF is consumed.
        let mut byte = [0u8; 1];
        while !header.ends_with(b"\r\n") {
            if header.len() >= V1_MAX {
                return Err(HeaderError::TooLong(V1_MAX));
            }
            stream.read_exact(&mut byte).await?;
            header.push(byte[0]);
        }
    } else if V2_SIGNATURE.starts_with(&header) {
        header.resize(16, 0);
        stream.read_exact(&mut header[V1_PREFIX.len()..]).await?;
        if &header[..12] != V2_SIGNATURE {
            return Err(HeaderError::Missing(preview(&header)));
        }
        let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
        if 16 + length > V2_MAX {
            return Err(HeaderError::TooLong(V2_MAX));
        }
        header.resize(16 + length, 0);
        stream.read_exact(&mut header[16..]).await?;
    } else {
        return Err(HeaderError::Missing(preview(&header)));
    }
    parse(&header)
}

fn parse(header: &[u8]) -> Result<Origin, HeaderError> {
    use ppp::{v1, v2, HeaderResult};
    let malformed = |e: &dyn std::fmt::Debug| HeaderError::Malformed(format!("{e:?}"));
    match HeaderResult::parse(header) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            v1::Addresses::Tcp4(a) => {
                Origin::Client(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            v1::Addresses::Tcp6(a) => {
                Origin::Client(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            v1::Addresses::Unknown => Origin::Proxy,
        }),
        HeaderResult::V2(Ok(h)) => {
            match (h.command, h.addresses) {
                (v2::Command::Local, _) => Ok(Origin::Proxy),
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => Ok(Origin::Client(
                    SocketAddr::new(a.source_address.into(), a.source_port),
                )),
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => Ok(Origin::Client(
                    SocketAddr::new(a.source_address.into(), a.source_port),
                )),
                (v2::Command::Proxy, other) => Err(HeaderError::Malformed(format!(
                    "unsupported address family {other:?}"
                ))),
            }
        }
        HeaderResult::V1(Err(e)) => Err(malformed(&e)),
        HeaderResult::V2(Err(e)) => Err(malformed(&e)),
    }
}

fn preview(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether an untrusted client's first bytes are a PROXY header (looked at without consuming,
/// for at most `wait`; a client that sends nothing first is not held up longer than that).
pub async fn starts_with_header(stream: &TcpStream, wait: Duration) -> bool {
    let mut first = [0u8; 12];
    match tokio::time::timeout(wait, stream.peek(&mut first)).await {
        // Five bytes tell a header from an SSH identification line ("SSH-2.0-...").
        Ok(Ok(n)) if n >= 5 => {
            V1_PREFIX.starts_with(&first[..n.min(V1_PREFIX.len())])
                || V2_SIGNATURE.starts_with(&first[..n])
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn origin(bytes: &[u8]) -> Result<Origin, HeaderError> {
        let mut input = bytes;
        read_header(&mut input, Duration::from_secs(1)).await
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[tokio::test]
    async fn v1_names_the_client_and_leaves_the_ssh_stream() {
        let mut input: &[u8] = b"PROXY TCP4 192.0.2.7 198.51.100.1 50123 2222\r\nSSH-2.0-x\r\n";
        let o = read_header(&mut input, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(o, Origin::Client("192.0.2.7:50123".parse().unwrap()));
        assert_eq!(input, b"SSH-2.0-x\r\n");
        let o = origin(b"PROXY TCP6 2001:db8::7 2001:db8::1 50123 2222\r\n")
            .await
            .unwrap();
        assert_eq!(o, Origin::Client("[2001:db8::7]:50123".parse().unwrap()));
        assert_eq!(origin(b"PROXY UNKNOWN\r\n").await.unwrap(), Origin::Proxy);
    }

    #[tokio::test]
    async fn v2_proxy_and_local() {
        let mut body = vec![192, 0, 2, 7, 198, 51, 100, 1];
        body.extend_from_slice(&50123u16.to_be_bytes());
        body.extend_from_slice(&2222u16.to_be_bytes());
        let mut bytes = v2(1, 0x11, &body);
        bytes.extend_from_slice(b"SSH-2.0-x\r\n");
        let mut input: &[u8] = &bytes;
        let o = read_header(&mut input, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(o, Origin::Client("192.0.2.7:50123".parse().unwrap()));
        assert_eq!(input, b"SSH-2.0-x\r\n");
        assert_eq!(origin(&v2(0, 0x00, &[])).await.unwrap(), Origin::Proxy);
    }

    #[tokio::test]
    async fn missing_truncated_oversized_and_slow_headers_are_refused() {
        assert!(matches!(
            origin(b"SSH-2.0-OpenSSH\r\n").await,
            Err(HeaderError::Missing(_))
        ));
        assert!(matches!(
            origin(b"PROXY TCP4 192.0.2.7").await,
            Err(HeaderError::Io(_))
        ));
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert!(matches!(origin(&long).await, Err(HeaderError::TooLong(_))));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(origin(&huge).await, Err(HeaderError::TooLong(_))));
        assert!(matches!(
            origin(b"PROXY TCP4 not-an-ip 198.51.100.1 1 2\r\n").await,
            Err(HeaderError::Malformed(_))
        ));
        let (mut slow, _writer) = tokio::io::duplex(64);
        let r = read_header(&mut slow, Duration::from_millis(50)).await;
        assert!(matches!(r, Err(HeaderError::Timeout(_))));
    }

    #[test]
    fn trust_is_by_network_and_sees_through_mapped_ipv4() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        assert!(is_trusted(&"10.1.2.3:5".parse().unwrap(), &trusted));
        assert!(is_trusted(
            &"[::ffff:10.1.2.3]:5".parse().unwrap(),
            &trusted
        ));
        assert!(is_trusted(&"[::1]:5".parse().unwrap(), &trusted));
        assert!(!is_trusted(&"192.0.2.1:5".parse().unwrap(), &trusted));
    }
}
