//! Forwarded connections into a pod through the API server's port-forward subresource (what
//! `kubectl port-forward` uses): the kubelet connects to the port inside the pod's network
//! namespace, so no helper is needed in the image. Port-forward reaches the pod's own
//! localhost only; the workload sends other hosts and Unix sockets to the helper instead
//! (`port_forwardable` decides).
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Portforwarder};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

use crate::backend::forward::{ForwardError, ForwardStream, ForwardTarget};
use crate::backend::kubernetes::exec::Target;

/// Whether `host` names the pod's own loopback.
fn is_local(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether port-forward can make this connection (a port on the pod's own loopback).
pub fn port_forwardable(forward: &ForwardTarget) -> bool {
    matches!(forward, ForwardTarget::Tcp { host, .. } if is_local(host))
}

pub async fn open(target: &Target, forward: &ForwardTarget) -> Result<ForwardStream, ForwardError> {
    let port = match forward {
        ForwardTarget::Tcp { host, port } if is_local(host) => u16::try_from(*port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| ForwardError::ConnectFailed(format!("bad port {port}")))?,
        ForwardTarget::Tcp { host, .. } => {
            return Err(ForwardError::Unavailable(format!(
                "the Kubernetes backend forwards to the pod's own localhost only, not to {host}"
            )))
        }
        ForwardTarget::Unix(_) => {
            return Err(ForwardError::Unavailable(
                "the Kubernetes backend cannot forward to Unix sockets".into(),
            ))
        }
    };
    let pods: Api<Pod> = Api::namespaced(target.client.clone(), &target.namespace);
    let mut forwarder = pods.portforward(&target.pod, &[port]).await.map_err(|e| {
        ForwardError::Unavailable(format!("port-forward to pod {}: {e}", target.pod))
    })?;
    let stream = forwarder.take_stream(port).ok_or_else(|| {
        ForwardError::Unavailable("the port-forward connection has no stream".into())
    })?;
    // The kubelet reports a refused port on the error channel; it ends the stream too.
    if let Some(error) = forwarder.take_error(port) {
        let connection_id = target.connection_id.clone();
        let pod = target.pod.clone();
        tokio::spawn(async move {
            if let Some(message) = error.await {
                tracing::info!(connection_id, pod, port, %message, "port-forward reported an error");
            }
        });
    }
    Ok(Box::pin(PortForward { stream, forwarder }))
}

/// The stream of one forwarded port; dropping it closes the port-forward connection.
struct PortForward {
    stream: DuplexStream,
    forwarder: Portforwarder,
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

impl AsyncRead for PortForward {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for PortForward {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_pods_own_loopback_is_local() {
        for host in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
        ] {
            assert!(super::is_local(host), "{host}");
        }
        for host in ["example.com", "10.0.0.1", "0.0.0.0", ""] {
            assert!(!super::is_local(host), "{host}");
        }
    }
}
