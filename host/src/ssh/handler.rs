//! The russh handler of one connection: authentication (in `login`), and channel requests,
//! each judged by the request filter (in `policy`) and answered inside its callback (OpenSSH
//! sends pty-req, env and exec in one burst, so a deferred reply would be lost). Work that
//! takes time happens in the channel task.
use std::collections::HashMap;
use std::sync::Arc;

use russh::server::{
    Auth, ChannelOpenHandle, GssapiAccept, GssapiMechanism, Msg, PublicKeyOffer, Session,
    VerifiedPublicKey,
};
use russh::{Channel, ChannelId, Pty, Sig};

use crate::backend::forward::ListenTarget;
use crate::backend::{sig_to_name, Command, ProgramSpec, TtySpec};
use crate::config::{ExecutionMode, MAX_AUTH_ATTEMPTS};
use crate::plugin::{ChannelRequest, Verdict};
use crate::ssh::channel::{self, ChannelControls, ChannelTask, Program, SignalDropped};
use crate::ssh::connection::Connection;
use crate::ssh::forward;
use crate::ssh::listen::{self, ListenKey, Listeners};

mod gssapi;
mod login;
mod policy;

use login::{AuthCheck, KbdState};

/// Most session channels a connection may have open at once.
const MAX_CHANNELS: usize = 16;
/// Most environment variables one session may set.
const MAX_ENV: usize = 256;

pub struct SshHandler {
    conn: Arc<Connection>,
    attempts: usize,
    channels: HashMap<ChannelId, ChannelState>,
    next_session: u32,
    /// `ssh -R` and streamlocal-forward listeners.
    listeners: Listeners,
    /// An OAuth2 login between keyboard-interactive rounds.
    kbd: Option<KbdState>,
    /// A `gssapi-with-mic` login between its messages (replaced by the next attempt; boxed:
    /// every connection carries the field).
    gss: Option<Box<crate::kerberos::gssapi::Context>>,
}

struct ChannelState {
    /// Session number within the connection (what the filter sees as session-id).
    session: u32,
    env: Vec<String>,
    tty: Option<TtySpec>,
    started: bool,
    /// The client asked for agent forwarding on this session.
    agent: bool,
    /// The client asked for X11 forwarding on this session.
    x11: Option<listen::X11Request>,
    /// The channel task's controls; never block a callback.
    controls: ChannelControls,
}

impl SshHandler {
    pub fn new(conn: Arc<Connection>) -> Self {
        Self {
            conn,
            attempts: 0,
            channels: HashMap::new(),
            next_session: 0,
            listeners: Listeners::default(),
            kbd: None,
            gss: None,
        }
    }

    fn cid(&self) -> &str {
        &self.conn.id
    }

    /// Adds the program's environment and hands it to the channel task.
    fn start(
        &mut self,
        channel: ChannelId,
        command: Command,
        extra_env: Option<String>,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let grant_env: Vec<String> = self
            .conn
            .grant
            .get()
            .map(|g| {
                g.environment
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect()
            })
            .unwrap_or_default();
        let Some(state) = self.channels.get_mut(&channel) else {
            return session.channel_failure(channel);
        };
        if state.started {
            tracing::warn!(connection_id = %self.conn.id, "second program request on one channel refused");
            return session.channel_failure(channel);
        }
        state.started = true;
        let mut env = grant_env;
        env.extend(state.env.iter().cloned());
        env.extend(extra_env);
        if state.agent {
            env.push(format!("SSH_AUTH_SOCK={}", self.conn.agent.path));
        }
        let spec = ProgramSpec {
            command,
            env,
            tty: state.tty.clone(),
            agent: state.agent,
        };
        let program = Program {
            spec,
            x11: state.x11.clone(),
        };
        if !state.controls.start(program) {
            return session.channel_failure(channel);
        }
        session.channel_success(channel)
    }

    /// The filter's verdict on a request of an open session channel, once its audit event is
    /// written (the gateway acts on a request only after the log has it).
    async fn audited_verdict(
        &self,
        channel: ChannelId,
        request: ChannelRequest,
        session: &mut Session,
    ) -> Verdict {
        let verdict = self.program_verdict(channel, request, session).await;
        self.conn.audit_written().await;
        verdict
    }

    /// Whether the filter allows a request, once its audit event is written.
    async fn audited_allowed(
        &self,
        channel: ChannelId,
        request: ChannelRequest,
        session: &mut Session,
    ) -> bool {
        let allowed = self.allowed(channel, request, session).await;
        self.conn.audit_written().await;
        allowed
    }
}

impl SshHandler {
    /// Drops a session channel's state (ending its task) and what the audit log kept for it.
    fn forget_channel(&mut self, channel: ChannelId) {
        if let Some(state) = self.channels.remove(&channel) {
            if let Some(audit) = &self.conn.audit {
                audit.session_closed(state.session);
            }
        }
    }

    /// Ends a session whose program the policy refused. A failure reply would make OpenSSH
    /// exit before it prints the reason already sent to stderr, so the request is answered,
    /// then the session ends with exit status 1.
    fn refuse_program(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        // Dropping the state ends the channel's task, which waits for a program.
        self.forget_channel(channel);
        session.channel_success(channel)?;
        session.exit_status_request(channel, 1)?;
        session.eof(channel)?;
        session.close(channel)
    }

    /// Forgets channels whose task has ended. russh reports no close for a channel the
    /// gateway closed itself, so this is how finished sessions stop counting.
    /// A forwarded connection: the policy decides, then a task connects it from inside the
    /// container and answers the open request.
    async fn open_forward(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        target: forward::Target,
        request: ChannelRequest,
        originator: String,
        session: &mut Session,
    ) {
        if !self.conn.is_authenticated() {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        }
        let verdict = self.judge(None, 0, request, session).await;
        self.conn.audit_written().await;
        if !matches!(verdict, Verdict::Allow) {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        }
        let task = forward::ForwardTask {
            conn: self.conn.clone(),
            channel,
            reply,
            target,
            originator,
        };
        self.conn.spawn(task.run());
    }

    /// Why nothing can listen in this connection's container, if so.
    fn cannot_listen(&self) -> Option<&'static str> {
        let settings = self.conn.workload_settings();
        if settings.mode() != ExecutionMode::Connection {
            Some("listening needs the connection execution mode (one container per connection)")
        } else {
            None
        }
    }

    /// Whether a new listener (`ssh -R`, streamlocal-forward) may start: authenticated, the
    /// policy allows it (audited), the backend can listen, and the connection has room.
    async fn listen_allowed(&mut self, request: ChannelRequest, session: &mut Session) -> bool {
        if !self.conn.is_authenticated() {
            return false;
        }
        let verdict = self.judge(None, 0, request, session).await;
        self.conn.audit_written().await;
        if !matches!(verdict, Verdict::Allow) {
            return false;
        }
        if let Some(refusal) = self.cannot_listen() {
            tracing::info!(connection_id = %self.cid(), reason = refusal, "listener refused");
            return false;
        }
        if self.listeners.live() >= listen::MAX_LISTENERS {
            tracing::warn!(connection_id = %self.cid(), "listener refused (limit reached)");
            return false;
        }
        true
    }

    fn forget_finished_channels(&mut self) {
        let finished: Vec<ChannelId> = self
            .channels
            .iter()
            .filter(|(_, state)| state.controls.finished())
            .map(|(channel, _)| *channel)
            .collect();
        for channel in finished {
            self.forget_channel(channel);
        }
    }
}

/// A failed password or key leaves every method on offer, as sshd does: `Auth::reject()` would
/// make russh withdraw the method, so OpenSSH could not retry a mistyped password. The attempt
/// cap (`MAX_AUTH_ATTEMPTS`) still ends the connection.
fn keep_methods_on_offer(auth: Auth, config: &crate::config::Config) -> Auth {
    match auth {
        Auth::Reject {
            proceed_with_methods: None,
            partial_success,
        } => Auth::Reject {
            proceed_with_methods: Some(crate::ssh::algorithms::auth_methods(config)),
            partial_success,
        },
        other => other,
    }
}

impl Drop for SshHandler {
    fn drop(&mut self) {
        // Runs when russh ends the connection, whichever way it ended. The cleanup (tasks
        // cancelled, workloads removed, audit log synced) runs off this thread.
        tracing::info!(connection_id = %self.conn.id, "connection closed");
        self.conn.close();
    }
}

impl russh::server::Handler for SshHandler {
    type Error = anyhow::Error;

    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        let banner = &self.conn.gateway.config.ssh.banner;
        Ok((!banner.is_empty()).then(|| banner.clone()))
    }

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let answer = self
            .authenticate(user, "password", AuthCheck::Password(password.as_bytes()))
            .await;
        // The attempt is in the audit log before the client hears the answer.
        self.conn.audit_written().await;
        answer.map(|a| keep_methods_on_offer(a, &self.conn.gateway.config))
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        // Answers are bounded by russh (the packet's size); each is text typed by the user.
        let answers = response.map(|r| {
            r.map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .collect::<Vec<_>>()
        });
        let answer = self.keyboard_interactive(user, answers).await;
        self.conn.audit_written().await;
        answer.map(|a| keep_methods_on_offer(a, &self.conn.gateway.config))
    }

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        _offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Let the client prove it holds the key; the plugin decides afterwards.
        if self.attempts >= MAX_AUTH_ATTEMPTS {
            return Err(anyhow::anyhow!("too many authentication failures"));
        }
        Ok(Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let Ok(text) = key.public_key.to_openssh() else {
            return Ok(Auth::reject());
        };
        let answer = self
            .authenticate(user, "publickey", AuthCheck::PublicKey(text))
            .await;
        self.conn.audit_written().await;
        answer.map(|a| keep_methods_on_offer(a, &self.conn.gateway.config))
    }

    async fn auth_gssapi_mechanism(
        &mut self,
        user: &str,
        mechanisms: &[bytes::Bytes],
    ) -> Result<GssapiMechanism, Self::Error> {
        self.gssapi_mechanism(user, mechanisms).await
    }

    async fn auth_gssapi_token(
        &mut self,
        user: &str,
        token: &[u8],
    ) -> Result<GssapiAccept, Self::Error> {
        self.gssapi_token(user, token).await
    }

    async fn auth_gssapi_mic(
        &mut self,
        user: &str,
        mic_data: &[u8],
        mic: &[u8],
    ) -> Result<Auth, Self::Error> {
        self.gssapi_mic(user, mic_data, mic).await
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.forget_finished_channels();
        if !self.conn.is_authenticated() {
            // The login was answered but the connection is being ended with a reason (its
            // configuration was unavailable). A refusal could overtake that disconnect and
            // OpenSSH would exit silently, so the open request stays unanswered until then.
            tracing::info!(connection_id = %self.cid(), "session channel left unanswered: the connection is closing");
            self.conn.spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                drop(reply);
            });
            return Ok(());
        }
        if self.channels.len() >= MAX_CHANNELS {
            tracing::warn!(connection_id = %self.cid(), "session channel refused (limit reached)");
            reply
                .reject(russh::ChannelOpenFailure::ResourceShortage)
                .await;
            return Ok(());
        }
        let session_no = self.next_session;
        let open = u32::try_from(self.channels.len()).unwrap_or(u32::MAX);
        let verdict = self
            .judge(None, session_no, ChannelRequest::OpenSession(open), session)
            .await;
        self.conn.audit_written().await;
        if let Verdict::Deny(_) = verdict {
            // russh sends no description with the refusal; the reason is in the log.
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        self.next_session += 1;
        let (controls, receivers) = channel::controls();
        self.channels.insert(
            channel.id(),
            ChannelState {
                session: session_no,
                env: Vec::new(),
                tty: None,
                started: false,
                agent: false,
                x11: None,
                controls,
            },
        );
        let task = ChannelTask {
            conn: self.conn.clone(),
            channel,
            reply,
            controls: receivers,
            handle: session.handle(),
            session: session_no,
        };
        self.conn.spawn(task.run());
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let target = forward::Target::Tcp {
            host: host_to_connect.to_string(),
            port: port_to_connect,
        };
        let request = ChannelRequest::DirectTcpip {
            host: host_to_connect.to_string(),
            port: port_to_connect,
        };
        let originator = format!("{originator_address}:{originator_port}");
        self.open_forward(channel, reply, target, request, originator, session)
            .await;
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let target = forward::Target::Unix(socket_path.to_string());
        let request = ChannelRequest::DirectStreamlocal(socket_path.to_string());
        self.open_forward(channel, reply, target, request, String::new(), session)
            .await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.forget_channel(channel);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let tty = TtySpec {
            term: term
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect(),
            columns: col_width,
            rows: row_height,
        };
        let request = ChannelRequest::Pty {
            term: tty.term.clone(),
            columns: col_width,
            rows: row_height,
        };
        let fresh = matches!(self.channels.get(&channel), Some(s) if !s.started && s.tty.is_none());
        if !fresh || !self.audited_allowed(channel, request, session).await {
            return Ok(session.channel_failure(channel)?);
        }
        if let Some(state) = self.channels.get_mut(&channel) {
            state.tty = Some(tty);
        }
        session.channel_success(channel)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let valid_name = !name.is_empty()
            && !name.contains('=')
            && !name.contains('\0')
            && !value.contains('\0');
        let acceptable = matches!(self.channels.get(&channel),
            Some(s) if !s.started && valid_name && s.env.len() < MAX_ENV);
        let request = ChannelRequest::Env(name.to_string(), value.to_string());
        if !acceptable || !self.audited_allowed(channel, request, session).await {
            return Ok(session.channel_failure(channel)?);
        }
        if let Some(state) = self.channels.get_mut(&channel) {
            state.env.push(format!("{name}={value}"));
        }
        session.channel_success(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = match self
            .audited_verdict(channel, ChannelRequest::Shell, session)
            .await
        {
            Verdict::Allow => Command::Shell,
            Verdict::RewriteCommand(forced) => Command::Exec(forced),
            Verdict::Deny(_) => return Ok(self.refuse_program(channel, session)?),
        };
        self.start(channel, command, None, session)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.conn.workload_settings().disable_command() {
            tracing::info!(connection_id = %self.cid(), "exec refused: disableCommand is set");
            session.channel_failure(channel)?;
            return Ok(());
        }
        let command = String::from_utf8_lossy(data).into_owned();
        let request = ChannelRequest::Exec(command.clone());
        match self.audited_verdict(channel, request, session).await {
            Verdict::Allow => self.start(channel, Command::Exec(command), None, session)?,
            Verdict::RewriteCommand(forced) => {
                // As sshd's ForceCommand: the client's command stays readable.
                let original = format!("SSH_ORIGINAL_COMMAND={command}");
                self.start(channel, Command::Exec(forced), Some(original), session)?;
            }
            Verdict::Deny(_) => self.refuse_program(channel, session)?,
        }
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let settings = self.conn.workload_settings();
        match settings.has_subsystem(name) {
            true if settings.disable_command() => {
                tracing::info!(connection_id = %self.cid(), subsystem = name, "subsystem refused: disableCommand is set");
                session.channel_failure(channel)?;
            }
            true => {
                let request = ChannelRequest::Subsystem(name.to_string());
                match self.audited_verdict(channel, request, session).await {
                    Verdict::Allow => {
                        let command = Command::Subsystem(name.to_string());
                        self.start(channel, command, None, session)?
                    }
                    Verdict::RewriteCommand(forced) => {
                        let original = format!("SSH_ORIGINAL_COMMAND={name}");
                        self.start(channel, Command::Exec(forced), Some(original), session)?;
                    }
                    Verdict::Deny(_) => self.refuse_program(channel, session)?,
                }
            }
            false => {
                tracing::info!(connection_id = %self.cid(), subsystem = name, "unknown subsystem refused");
                session.channel_failure(channel)?;
            }
        }
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let request = ChannelRequest::WindowChange {
            columns: col_width,
            rows: row_height,
        };
        if !self.channels.contains_key(&channel)
            || !self.audited_allowed(channel, request, session).await
        {
            return Ok(());
        }
        if let Some(state) = self.channels.get_mut(&channel) {
            if let Some(tty) = state.tty.as_mut() {
                tty.columns = col_width;
                tty.rows = row_height;
            }
            if state.started {
                // Coalesced: a flood of window changes costs one resize, of the latest size.
                state.controls.resize(col_width, row_height);
            }
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let name = sig_to_name(&signal);
        let started = self.channels.get(&channel).is_some_and(|s| s.started);
        if started
            && self
                .audited_allowed(channel, ChannelRequest::Signal(name.clone()), session)
                .await
        {
            if let Some(state) = self.channels.get(&channel) {
                if let Err(SignalDropped::QueueFull) = state.controls.signal(name.clone()) {
                    tracing::warn!(connection_id = %self.cid(), signal = %name,
                        "signal dropped: too many signals waiting for delivery");
                }
            }
        }
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        x11_auth_protocol: &str,
        x11_auth_cookie: &str,
        x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let fresh = matches!(self.channels.get(&channel), Some(s) if !s.started);
        let well_formed = x11_auth_protocol.len() <= 64
            && x11_auth_protocol.bytes().all(|b| b.is_ascii_graphic())
            && !x11_auth_cookie.is_empty()
            && x11_auth_cookie.len() <= 512
            && x11_auth_cookie.len().is_multiple_of(2)
            && x11_auth_cookie.bytes().all(|b| b.is_ascii_hexdigit())
            && x11_screen_number < 1000;
        if !fresh
            || !well_formed
            || !self
                .audited_allowed(channel, ChannelRequest::X11, session)
                .await
        {
            session.channel_failure(channel)?;
            return Ok(());
        }
        if let Some(refusal) = self.cannot_listen() {
            tracing::info!(connection_id = %self.cid(), reason = refusal, "X11 forwarding refused");
            session.channel_failure(channel)?;
            return Ok(());
        }
        if let Some(state) = self.channels.get_mut(&channel) {
            state.x11 = Some(listen::X11Request {
                protocol: x11_auth_protocol.to_string(),
                cookie: x11_auth_cookie.to_string(),
                screen: x11_screen_number,
            });
        }
        session.channel_success(channel)?;
        Ok(())
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let fresh = matches!(self.channels.get(&channel), Some(s) if !s.started);
        if !fresh
            || !self
                .audited_allowed(channel, ChannelRequest::AgentForwarding, session)
                .await
        {
            return Ok(false);
        }
        if let Some(refusal) = self.cannot_listen() {
            tracing::info!(connection_id = %self.cid(), reason = refusal, "agent forwarding refused");
            return Ok(false);
        }
        if let Some(state) = self.channels.get_mut(&channel) {
            state.agent = true;
        }
        Ok(true)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        if *port > u32::from(u16::MAX) {
            return Ok(false);
        }
        let request = ChannelRequest::TcpipForward {
            host: address.to_string(),
            port: *port,
        };
        if !self.listen_allowed(request, session).await {
            return Ok(false);
        }
        if *port == 0 {
            *port = listen::pick_port();
        }
        let key = ListenKey::Tcp(address.to_string(), *port);
        if self.listeners.contains(&key) {
            return Ok(false);
        }
        let target = ListenTarget::Tcp {
            host: listen::bind_address(address),
            port: *port,
        };
        self.listeners.start(&self.conn, key, target);
        Ok(true)
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self
            .listeners
            .cancel(&ListenKey::Tcp(address.to_string(), port)))
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        if socket_path.is_empty() || socket_path.contains('\0') || socket_path.len() > 107 {
            return Ok(false);
        }
        let request = ChannelRequest::StreamlocalForward(socket_path.to_string());
        if !self.listen_allowed(request, session).await {
            return Ok(false);
        }
        let key = ListenKey::Unix(socket_path.to_string());
        if self.listeners.contains(&key) {
            return Ok(false);
        }
        let target = ListenTarget::Unix(socket_path.to_string());
        self.listeners.start(&self.conn, key, target);
        Ok(true)
    }

    async fn cancel_streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self
            .listeners
            .cancel(&ListenKey::Unix(socket_path.to_string())))
    }
}
