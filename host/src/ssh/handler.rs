//! The russh handler of one connection: authentication through the auth plugin, and channel
//! requests answered inside their callbacks (OpenSSH sends pty-req, env and exec in one burst,
//! so a deferred reply would be lost). Work that takes time happens in the channel task.
use std::collections::HashMap;
use std::sync::Arc;

use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, Pty, Sig};
use tokio::sync::mpsc;

use crate::backend::{ProcessSpec, TtySpec};
use crate::config::MAX_AUTH_ATTEMPTS;
use crate::observe::AuthResult;
use crate::plugin::AuthOutcome;
use crate::ssh::channel::{sig_to_name, ChannelCommand, ChannelTask};
use crate::ssh::connection::Connection;

/// Most session channels a connection may have open at once.
const MAX_CHANNELS: usize = 16;
/// Most environment variables one session may set.
const MAX_ENV: usize = 256;

pub struct SshHandler {
    conn: Arc<Connection>,
    attempts: usize,
    channels: HashMap<ChannelId, ChannelState>,
    next_session: u32,
}

struct ChannelState {
    env: Vec<String>,
    tty: Option<TtySpec>,
    started: bool,
    commands: mpsc::UnboundedSender<ChannelCommand>,
}

impl SshHandler {
    pub fn new(conn: Arc<Connection>) -> Self {
        Self {
            conn,
            attempts: 0,
            channels: HashMap::new(),
            next_session: 0,
        }
    }

    fn cid(&self) -> &str {
        &self.conn.id
    }

    async fn authenticate(
        &mut self,
        user: &str,
        method: &'static str,
        check: AuthCheck<'_>,
    ) -> anyhow::Result<Auth> {
        if self.attempts >= MAX_AUTH_ATTEMPTS {
            // The disconnect sent after the last failure is on its way; end the connection
            // rather than answer a seventh attempt.
            tracing::warn!(connection_id = %self.cid(), user, method, "attempt after the last allowed one; closing");
            return Err(anyhow::anyhow!("too many authentication failures"));
        }
        self.attempts += 1;
        let guards = &self.conn.gateway.guards;
        let ip = self.conn.peer.ip();
        let user_key = user.to_string();
        if !guards.per_ip.allows(&ip) || !guards.per_user.allows(&user_key) {
            tracing::warn!(connection_id = %self.cid(), user, method, %ip,
                "authentication refused: too many recent failures (ssh.authRateLimit)");
            self.conn
                .gateway
                .metrics
                .auth_attempt(method, AuthResult::RateLimited);
            self.after_failure();
            return Ok(Auth::reject());
        }
        let plugin = &self.conn.gateway.auth;
        let info = self.conn.info(user);
        let started = std::time::Instant::now();
        let outcome = match check {
            AuthCheck::Password(pw) => plugin.password(&info, pw).await,
            AuthCheck::PublicKey(key) => plugin.public_key(&info, &key).await,
        };
        let outcome = match outcome {
            AuthOutcome::Success(grant) => plugin.authorize(&info, &grant).await,
            other => other,
        };
        self.conn.gateway.metrics.plugin_call(started.elapsed());
        let metric = match &outcome {
            AuthOutcome::Success(_) => AuthResult::Success,
            AuthOutcome::Failure(_) => AuthResult::Failure,
            AuthOutcome::Unsupported => AuthResult::Unsupported,
            AuthOutcome::Error(_) => AuthResult::Error,
        };
        self.conn.gateway.metrics.auth_attempt(method, metric);
        let result = match outcome {
            AuthOutcome::Success(grant) => {
                tracing::info!(connection_id = %self.cid(), user, method, as_user = %grant.authenticated_username, "authentication succeeded");
                self.conn.authenticated_as(grant);
                Auth::Accept
            }
            AuthOutcome::Failure(reason) => {
                tracing::info!(connection_id = %self.cid(), user, method, attempt = self.attempts, %reason, "authentication failed");
                Auth::reject()
            }
            AuthOutcome::Unsupported => {
                tracing::info!(connection_id = %self.cid(), user, method, "authentication method not supported by the auth plugin");
                Auth::reject()
            }
            AuthOutcome::Error(e) => {
                tracing::error!(connection_id = %self.cid(), user, method, error = format!("{e:#}"), "auth plugin failed; denying");
                Auth::reject()
            }
        };
        if result != Auth::Accept {
            guards.per_ip.record_failure(&ip);
            guards.per_user.record_failure(&user_key);
            self.after_failure();
        }
        Ok(result)
    }

    /// After the last allowed attempt failed, the client is told and disconnected.
    fn after_failure(&self) {
        if self.attempts >= MAX_AUTH_ATTEMPTS {
            tracing::warn!(connection_id = %self.cid(), attempts = self.attempts, "too many authentication failures; disconnecting");
            self.conn.disconnect(
                russh::Disconnect::NoMoreAuthMethodsAvailable,
                "Too many authentication failures",
            );
        }
    }

    /// Builds the program's argv and environment and hands it to the channel task.
    fn start(
        &mut self,
        channel: ChannelId,
        argv: Vec<String>,
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
        let spec = ProcessSpec {
            argv,
            env,
            tty: state.tty.clone(),
        };
        if state.commands.send(ChannelCommand::Start(spec)).is_err() {
            return session.channel_failure(channel);
        }
        session.channel_success(channel)
    }
}

enum AuthCheck<'a> {
    Password(&'a [u8]),
    PublicKey(String),
}

impl Drop for SshHandler {
    fn drop(&mut self) {
        // Runs when russh ends the connection, whichever way it ended.
        tracing::info!(connection_id = %self.conn.id, "connection closed");
        self.conn.cleanup();
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
        self.authenticate(user, "password", AuthCheck::Password(password.as_bytes()))
            .await
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
        self.authenticate(user, "publickey", AuthCheck::PublicKey(text))
            .await
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.conn.is_authenticated() || self.channels.len() >= MAX_CHANNELS {
            tracing::warn!(connection_id = %self.cid(), "session channel refused (limit reached)");
            reply
                .reject(russh::ChannelOpenFailure::ResourceShortage)
                .await;
            return Ok(());
        }
        let session_no = self.next_session;
        self.next_session += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        self.channels.insert(
            channel.id(),
            ChannelState {
                env: Vec::new(),
                tty: None,
                started: false,
                commands: tx,
            },
        );
        let task = ChannelTask {
            conn: self.conn.clone(),
            channel,
            reply,
            commands: rx,
            handle: session.handle(),
            session: session_no,
        };
        tokio::spawn(task.run());
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
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
        match self.channels.get_mut(&channel) {
            Some(state) if !state.started && state.tty.is_none() => {
                state.tty = Some(TtySpec {
                    term: term
                        .chars()
                        .filter(|c| c.is_ascii_graphic())
                        .take(64)
                        .collect(),
                    columns: col_width,
                    rows: row_height,
                });
                session.channel_success(channel)?;
            }
            _ => session.channel_failure(channel)?,
        }
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
        match self.channels.get_mut(&channel) {
            Some(state) if !state.started && valid_name && state.env.len() < MAX_ENV => {
                state.env.push(format!("{name}={value}"));
                session.channel_success(channel)?;
            }
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let argv = self.conn.execution.shell_command.clone();
        self.start(channel, argv, session)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.conn.execution.disable_command {
            tracing::info!(connection_id = %self.cid(), "exec refused: disableCommand is set");
            session.channel_failure(channel)?;
            return Ok(());
        }
        // Like sshd: the command goes to the shell as one string, never split here.
        let command = String::from_utf8_lossy(data).into_owned();
        let mut argv = self.conn.execution.shell_command.clone();
        argv.push("-c".into());
        argv.push(command);
        self.start(channel, argv, session)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let program = self.conn.execution.subsystems.get(name).cloned();
        match program {
            Some(_) if self.conn.execution.disable_command => {
                tracing::info!(connection_id = %self.cid(), subsystem = name, "subsystem refused: disableCommand is set");
                session.channel_failure(channel)?;
            }
            Some(program) => self.start(channel, vec![program], session)?,
            None => {
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
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(state) = self.channels.get_mut(&channel) {
            if let Some(tty) = state.tty.as_mut() {
                tty.columns = col_width;
                tty.rows = row_height;
            }
            if state.started {
                let _ = state.commands.send(ChannelCommand::Resize {
                    columns: col_width,
                    rows: row_height,
                });
            }
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(state) = self.channels.get(&channel) {
            if state.started {
                let _ = state
                    .commands
                    .send(ChannelCommand::Signal(sig_to_name(&signal)));
            }
        }
        Ok(())
    }
}
