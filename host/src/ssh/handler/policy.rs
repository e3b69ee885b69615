//! Every channel request passes the request filter before it reaches the backend. A denial
//! is logged and, on an open channel, its one-line reason written to the client's stderr.
use russh::server::Session;
use russh::ChannelId;

use super::SshHandler;
use crate::plugin::{request_kind as kind, ChannelRequest, Verdict};

impl SshHandler {
    /// The filter's verdict on `request`; `channel` is where a denial's reason is written.
    pub(super) async fn judge(
        &self,
        channel: Option<ChannelId>,
        session_no: u32,
        request: ChannelRequest,
        session: &mut Session,
    ) -> Verdict {
        let conn = &self.conn;
        let info = conn.info(&conn.username());
        let verdict = conn
            .gateway
            .plugins
            .filter
            .filter(&info, session_no, &request, conn.security_json())
            .await;
        conn.audit("request", audit_fields(session_no, &request, &verdict));
        match &verdict {
            Verdict::Deny(reason) => {
                tracing::info!(connection_id = %conn.id, session = session_no, request = kind(&request), %reason,
                    "request denied by the security policy");
                conn.gateway.metrics.request_denied(kind(&request));
                if let Some(channel) = channel {
                    let line = format!("containerssh: {reason}\r\n");
                    let _ = session.extended_data(channel, 1, line.into_bytes());
                }
            }
            Verdict::RewriteCommand(_) => {
                tracing::info!(connection_id = %conn.id, session = session_no, request = kind(&request),
                    "command replaced by the security policy (forceCommand)");
            }
            Verdict::Allow => {}
        }
        verdict
    }

    /// Whether the filter allows a request that cannot be rewritten.
    pub(super) async fn allowed(
        &self,
        channel: ChannelId,
        request: ChannelRequest,
        session: &mut Session,
    ) -> bool {
        match self.program_verdict(channel, request, session).await {
            Verdict::Allow => true,
            Verdict::Deny(_) => false,
            Verdict::RewriteCommand(_) => {
                tracing::warn!(connection_id = %self.conn.id, "the filter rewrote a request that carries no command; denying");
                false
            }
        }
    }

    /// The verdict on a request of an open session channel.
    pub(super) async fn program_verdict(
        &self,
        channel: ChannelId,
        request: ChannelRequest,
        session: &mut Session,
    ) -> Verdict {
        let Some(session_no) = self.channels.get(&channel).map(|s| s.session) else {
            return Verdict::Deny("no such channel".into());
        };
        self.judge(Some(channel), session_no, request, session)
            .await
    }
}

/// What the audit log keeps of a request and its verdict. Environment values are left out
/// (they often carry tokens); commands are kept, as sshd's and ContainerSSH's logs do.
fn audit_fields(session: u32, request: &ChannelRequest, verdict: &Verdict) -> serde_json::Value {
    use serde_json::json;
    let mut fields = json!({"session": session, "request": kind(request)});
    let detail = match request {
        ChannelRequest::OpenSession(open) => json!({"openSessions": open}),
        ChannelRequest::Env(name, _) => json!({"name": name}),
        ChannelRequest::Pty {
            term,
            columns,
            rows,
        } => {
            json!({"term": term, "columns": columns, "rows": rows})
        }
        ChannelRequest::Exec(command) => json!({"command": command}),
        ChannelRequest::Subsystem(name) => json!({"name": name}),
        ChannelRequest::Signal(name) => json!({"signal": name}),
        ChannelRequest::WindowChange { columns, rows } => json!({"columns": columns, "rows": rows}),
        ChannelRequest::DirectTcpip { host, port }
        | ChannelRequest::TcpipForward { host, port } => {
            json!({"host": host, "port": port})
        }
        ChannelRequest::DirectStreamlocal(path) | ChannelRequest::StreamlocalForward(path) => {
            json!({"path": path})
        }
        ChannelRequest::Shell | ChannelRequest::X11 | ChannelRequest::AgentForwarding => json!({}),
    };
    let outcome = match verdict {
        Verdict::Allow => json!({"verdict": "allow"}),
        Verdict::Deny(reason) => json!({"verdict": "deny", "reason": reason}),
        Verdict::RewriteCommand(command) => json!({"verdict": "rewrite", "runs": command}),
    };
    if let (Some(f), Some(d), Some(o)) = (
        fields.as_object_mut(),
        detail.as_object(),
        outcome.as_object(),
    ) {
        f.extend(d.clone());
        f.extend(o.clone());
    }
    fields
}
