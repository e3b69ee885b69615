//! Authentication through the auth plugin, then this connection's own settings from the
//! config plugin (if one is configured), merged over the file's and validated.
use russh::server::Auth;

use super::SshHandler;
use crate::config::{merge_answer, MAX_AUTH_ATTEMPTS};
use crate::oauth2::{LoginError, Progress};
use crate::observe::AuthResult;
use crate::plugin::{AuthGrant, AuthOutcome, ConnectionInfo, Credentials};
use crate::ssh::connection::ConnectionSettings;
use crate::ssh::limits::Source;

pub(super) enum AuthCheck<'a> {
    Password(&'a [u8]),
    PublicKey(String),
}

/// A keyboard-interactive (OAuth2) login between rounds.
pub(super) enum KbdState {
    /// The client was shown the link (and asked for the code). Boxed: every connection's
    /// handler carries the field.
    Pending(Box<crate::oauth2::Pending>),
    /// The login failed and the client was shown why; its next answer gets the rejection.
    Failed,
}

impl SshHandler {
    pub(super) async fn authenticate(
        &mut self,
        user: &str,
        method: &'static str,
        check: AuthCheck<'_>,
    ) -> anyhow::Result<Auth> {
        if let Some(refused) = self.admit(user, method)? {
            return Ok(refused);
        }
        let info = self.conn.info(user);
        let started = std::time::Instant::now();
        let credentials = match &check {
            AuthCheck::Password(pw) => Credentials::Password(pw),
            AuthCheck::PublicKey(key) => Credentials::PublicKey(key),
        };
        let kerberos = self.conn.gateway.kerberos.clone();
        let outcome = match (&check, kerberos) {
            // Passwords go to the KDC instead of the auth plugin (ContainerSSH's
            // `auth.password.method: kerberos`).
            (AuthCheck::Password(password), Some(kerberos)) if kerberos.checks_passwords() => {
                match kerberos.check_password(user, password).await {
                    Ok(grant) => {
                        tracing::info!(connection_id = %self.cid(), user, as_user = %grant.authenticated_username,
                            "the KDC vouched for the user's password");
                        self.authorize_vouched(&info, grant).await
                    }
                    Err(e) => e.into(),
                }
            }
            _ => match &self.conn.gateway.plugins.auth {
                Some(plugin) => plugin.login(&info, credentials).await,
                // Another method (OAuth2, Kerberos) is the only login.
                None => AuthOutcome::Unsupported,
            },
        };
        self.conn.gateway.metrics.plugin_call(started.elapsed());
        self.conclude(user, method, &info, outcome).await
    }

    /// One keyboard-interactive round of an OAuth2 login: the first shows the link (and asks
    /// for the code), the second waits for the provider's answer.
    pub(super) async fn keyboard_interactive(
        &mut self,
        user: &str,
        answers: Option<Vec<String>>,
    ) -> anyhow::Result<Auth> {
        const METHOD: &str = "keyboard-interactive";
        let Some(oauth2) = self.conn.gateway.oauth2.clone() else {
            return Ok(Auth::reject());
        };
        match (self.kbd.take(), answers) {
            (Some(KbdState::Pending(pending)), Some(answers)) => {
                let info = self.conn.info(user);
                let cancelled = self.conn.cancel.clone();
                let progress = tokio::select! {
                    progress = oauth2.step(*pending, answers, user, &self.conn.gateway.cleanup) => progress,
                    // The connection ended (the login grace time, the gateway shutting down).
                    () = cancelled.cancelled() => return Err(anyhow::anyhow!("the connection ended during the OAuth2 login")),
                };
                let finished = match progress {
                    Progress::Waiting(pending) => {
                        // Not decided yet: an empty round keeps the client (and russh) talking.
                        self.kbd = Some(KbdState::Pending(Box::new(pending)));
                        return Ok(Auth::Partial {
                            name: "".into(),
                            instructions: "".into(),
                            prompts: Vec::new().into(),
                        });
                    }
                    Progress::Done(finished) => finished,
                };
                let outcome = match finished {
                    Ok(identity) => {
                        tracing::info!(connection_id = %self.cid(), user, provider = ?oauth2.config().provider,
                            as_user = %identity.account.username, "OAuth2 provider vouched for the user");
                        let grant = AuthGrant {
                            authenticated_username: identity.account.username,
                            metadata: identity.account.metadata,
                            environment: Vec::new(),
                            files: Vec::new(),
                            sensitive: identity.account.sensitive,
                        };
                        let outcome = self.authorize_vouched(&info, grant).await;
                        if matches!(outcome, AuthOutcome::Success(_)) {
                            // Revoked when the connection ends.
                            let _ = self.conn.oauth2_token.set(Box::new(identity.token));
                        } else {
                            // Refused after all: dropping the token revokes it now (the
                            // shutdown waits for it like for any cleanup).
                            drop(identity.token);
                        }
                        outcome
                    }
                    Err(e) => {
                        let shown = match &e {
                            LoginError::Denied(why) => format!("Login failed: {why}.\n"),
                            LoginError::TimedOut => "Login failed: it was not completed in time.\n".into(),
                            LoginError::Unavailable(_) => "Login failed: the login service is unavailable; please try again later.\n".into(),
                        };
                        let outcome = match e {
                            LoginError::Denied(why) => AuthOutcome::Failure(why),
                            LoginError::TimedOut => AuthOutcome::Unavailable(
                                "the user did not complete the login in time".into(),
                            ),
                            LoginError::Unavailable(why) => AuthOutcome::Unavailable(why),
                        };
                        let refused = self.conclude(user, METHOD, &info, outcome).await?;
                        if refused != Auth::reject() || self.attempts >= MAX_AUTH_ATTEMPTS {
                            return Ok(refused);
                        }
                        // Tell the user why before the rejection (an info request without questions).
                        self.kbd = Some(KbdState::Failed);
                        return Ok(Auth::Partial {
                            name: "".into(),
                            instructions: shown.into(),
                            prompts: Vec::new().into(),
                        });
                    }
                };
                self.conclude(user, METHOD, &info, outcome).await
            }
            (Some(KbdState::Failed), Some(_)) => Ok(Auth::reject()),
            // A new attempt (or a new request in the middle of one).
            _ => {
                if let Some(refused) = self.admit(user, METHOD)? {
                    return Ok(refused);
                }
                match oauth2.begin(user).await {
                    Ok(pending) => {
                        let prompt = pending.prompt();
                        self.kbd = Some(KbdState::Pending(Box::new(pending)));
                        Ok(Auth::Partial {
                            name: "".into(),
                            instructions: prompt.instructions.into(),
                            prompts: prompt
                                .questions
                                .into_iter()
                                .map(|(q, echo)| (q.into(), echo))
                                .collect::<Vec<_>>()
                                .into(),
                        })
                    }
                    Err(e) => {
                        let info = self.conn.info(user);
                        self.conclude(user, METHOD, &info, AuthOutcome::Unavailable(e.to_string()))
                            .await
                    }
                }
            }
        }
    }

    /// A login another authority vouched for (an OAuth2 provider, the KDC): the auth plugin,
    /// if there is one (e.g. an authz webhook), still decides who may enter.
    pub(super) async fn authorize_vouched(
        &self,
        info: &ConnectionInfo,
        grant: AuthGrant,
    ) -> AuthOutcome {
        match &self.conn.gateway.plugins.auth {
            Some(plugin) => plugin.authorize(info, &grant).await,
            None => AuthOutcome::Success(grant),
        }
    }

    /// Counts an attempt and applies the rate limits; `Some` is the answer when refused.
    pub(super) fn admit(
        &mut self,
        user: &str,
        method: &'static str,
    ) -> anyhow::Result<Option<Auth>> {
        if self.attempts >= MAX_AUTH_ATTEMPTS {
            // The disconnect sent after the last failure is on its way; end the connection
            // rather than answer a seventh attempt.
            tracing::warn!(connection_id = %self.cid(), user, method, "attempt after the last allowed one; closing");
            return Err(anyhow::anyhow!("too many authentication failures"));
        }
        self.attempts += 1;
        let guards = &self.conn.gateway.guards;
        let source = Source::of(self.conn.peer.ip());
        // Per user *and* source: someone guessing alice's password elsewhere must not lock
        // alice out.
        let user_key = (user.to_string(), source);
        if !guards.per_source.allows(&source) || !guards.per_user.allows(&user_key) {
            tracing::warn!(connection_id = %self.cid(), user, method, %source,
                "authentication refused: too many recent failures (ssh.authRateLimit)");
            self.conn
                .gateway
                .metrics
                .auth_attempt(method, AuthResult::RateLimited);
            self.conn.audit(
                "auth",
                serde_json::json!({"username": user, "method": method, "result": AuthResult::RateLimited.as_str()}),
            );
            self.after_failure();
            return Ok(Some(Auth::reject()));
        }
        Ok(None)
    }

    /// Records an attempt's outcome (metrics, audit, log, rate limits) and answers it; a
    /// success continues with the connection's settings.
    pub(super) async fn conclude(
        &self,
        user: &str,
        method: &'static str,
        info: &ConnectionInfo,
        outcome: AuthOutcome,
    ) -> anyhow::Result<Auth> {
        let guards = &self.conn.gateway.guards;
        let source = Source::of(self.conn.peer.ip());
        let user_key = (user.to_string(), source);
        let metric = match &outcome {
            AuthOutcome::Success(_) => AuthResult::Success,
            AuthOutcome::Failure(_) => AuthResult::Failure,
            AuthOutcome::Unsupported => AuthResult::Unsupported,
            AuthOutcome::Overloaded(_) => AuthResult::Overloaded,
            AuthOutcome::Unavailable(_) => AuthResult::Unavailable,
            AuthOutcome::Error(_) => AuthResult::Error,
        };
        self.conn.gateway.metrics.auth_attempt(method, metric);
        // Who tried which method and how it ended; never the password.
        self.conn.audit(
            "auth",
            serde_json::json!({
                "username": user,
                "method": method,
                "result": metric.as_str(),
                "authenticatedUsername": match &outcome {
                    AuthOutcome::Success(g) => Some(g.authenticated_username.clone()),
                    _ => None,
                },
            }),
        );
        // Only wrong credentials count against the rate limits: a key offered to a plugin
        // that takes passwords only, an auth server that is down or a plugin without a free
        // slot says nothing about guessing, and counting them would lock out users who then
        // type the right password.
        let guessed = matches!(outcome, AuthOutcome::Failure(_));
        let result = match outcome {
            AuthOutcome::Success(grant) => {
                tracing::info!(connection_id = %self.cid(), user, method, as_user = %grant.authenticated_username, "authentication succeeded");
                match self.connection_settings(info, grant).await {
                    Ok((grant, settings)) => {
                        self.conn.authenticated_as(grant, settings);
                        return Ok(Auth::Accept);
                    }
                    Err(e) => {
                        // Not the user's fault: no rate-limit penalty, and a reason instead of
                        // "permission denied" (which would send the client to its next method).
                        // The login is answered, but the connection never counts as
                        // authenticated, so no channel opens before the disconnect lands.
                        tracing::error!(connection_id = %self.cid(), user, error = format!("{e:#}"), "no configuration for this connection; disconnecting");
                        self.conn.gateway.metrics.backend_error("config");
                        self.conn.disconnect(
                            russh::Disconnect::ByApplication,
                            "containerssh: the configuration for this connection is unavailable",
                        );
                        return Ok(Auth::Accept);
                    }
                }
            }
            AuthOutcome::Failure(reason) => {
                tracing::info!(connection_id = %self.cid(), user, method, attempt = self.attempts, %reason, "authentication failed");
                Auth::reject()
            }
            AuthOutcome::Unsupported => {
                tracing::info!(connection_id = %self.cid(), user, method, "authentication method not supported by the auth plugin");
                Auth::reject()
            }
            AuthOutcome::Overloaded(e) => {
                tracing::warn!(connection_id = %self.cid(), user, method, reason = e.why.label(), error = %e,
                    "authentication not checked: the auth plugin is overloaded; this attempt fails but does not count as a failed login");
                Auth::reject()
            }
            AuthOutcome::Unavailable(reason) => {
                tracing::error!(connection_id = %self.cid(), user, method, %reason,
                    "authentication not checked: the auth service is unavailable; this attempt fails but does not count as a failed login");
                Auth::reject()
            }
            AuthOutcome::Error(e) => {
                tracing::error!(connection_id = %self.cid(), user, method, error = format!("{e:#}"), "auth plugin failed; denying");
                Auth::reject()
            }
        };
        if result != Auth::Accept {
            if guessed {
                guards.per_source.record_failure(&source);
                guards.per_user.record_failure(&user_key);
            }
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

    /// The grant and settings this connection continues with: the file's, or a config
    /// plugin's answer merged over them.
    async fn connection_settings(
        &self,
        info: &ConnectionInfo,
        grant: AuthGrant,
    ) -> anyhow::Result<(AuthGrant, ConnectionSettings)> {
        let gateway = &self.conn.gateway;
        let Some(plugin) = &gateway.plugins.config else {
            return Ok((grant, ConnectionSettings::from_config(&gateway.config)));
        };
        let started = std::time::Instant::now();
        let answer = plugin.get_config(info, &grant).await;
        gateway.metrics.config_call(started.elapsed());
        let answer = answer?;
        let merged = merge_answer(&gateway.config, &answer.config, gateway.config.config_merge)
            .map_err(|e| anyhow::anyhow!("{}", e.problems.join("; ")))?;
        if !merged.ignored.is_empty() {
            tracing::warn!(connection_id = %self.conn.id, keys = ?merged.ignored,
                "config server answer: these sections cannot change per connection and were ignored");
        }
        // A policy the filter cannot read would deny every request after a "successful"
        // login; refuse the connection now, with the reason in the log.
        if merged.config.security != gateway.config.security {
            gateway
                .plugins
                .filter
                .check_policy(&merged.config.security.to_string())
                .await
                .map_err(|e| e.context("config server answer: security"))?;
        }
        let settings = ConnectionSettings::from_config(&merged.config);
        tracing::info!(connection_id = %self.conn.id, backend = ?merged.config.backend,
            image = %settings.workload.describe(), "connection configuration received");
        Ok((answer.grant, settings))
    }
}
