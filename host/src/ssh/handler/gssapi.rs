//! `gssapi-with-mic` (ContainerSSH's `auth.gssapi.method: kerberos`): russh runs the exchange,
//! the keytab accepts the client's ticket, and the MIC proves the context belongs to this
//! session. The library calls read the keytab and the replay cache (local files, well under a
//! millisecond): they run inside `block_in_place`, so the worker's other tasks move on.
use russh::server::{Auth, GssapiAccept, GssapiMechanism};

use super::{keep_methods_on_offer, SshHandler};

/// The name of the method in metrics, the audit log and rate limits.
const GSSAPI: &str = "gssapi-with-mic";

impl SshHandler {
    /// A failed step of a GSSAPI login: recorded and answered like any failed attempt.
    async fn gssapi_refused(
        &mut self,
        user: &str,
        error: crate::kerberos::KerberosError,
    ) -> anyhow::Result<Auth> {
        self.gss = None;
        let info = self.conn.info(user);
        let answer = self.conclude(user, GSSAPI, &info, error.into()).await;
        self.conn.audit_written().await;
        answer.map(|a| keep_methods_on_offer(a, &self.conn.gateway.config))
    }

    /// Who the verified context says the client is, as a grant for `user`.
    fn gssapi_grant(
        &self,
        context: &mut crate::kerberos::gssapi::Context,
        user: &str,
        mic_data: &[u8],
        mic: &[u8],
    ) -> Result<crate::plugin::AuthGrant, crate::kerberos::KerberosError> {
        use crate::kerberos::KerberosError;
        let Some(kerberos) = self.conn.gateway.kerberos.as_ref() else {
            return Err(KerberosError::Unavailable("Kerberos is off".into()));
        };
        context.verify_mic(mic_data, mic)?;
        let principal = context
            .principal()
            .ok_or_else(|| KerberosError::Denied("the context names no client".into()))?
            .to_string();
        // As sshd: the principal's local name (its realm must be ours, or auth_to_local
        // must map it) is the only user it may be.
        if kerberos.config().enforce_username {
            let name = kerberos.local_name(&principal)?;
            if name != user {
                return Err(KerberosError::Denied(format!(
                    "the principal {principal} may not log in as {user} (enforceUsername)"
                )));
            }
        }
        let credentials = match context.delegated_credentials() {
            Ok(credentials) => credentials,
            Err(e) => {
                // As ContainerSSH: the login stands, without the credentials.
                tracing::warn!(connection_id = %self.cid(), user, error = %e, "the client's delegated Kerberos credentials are not passed on");
                None
            }
        };
        tracing::info!(connection_id = %self.cid(), user, %principal, delegated = credentials.is_some(),
            "the client's Kerberos ticket vouched for the user");
        Ok(kerberos.grant(user, &principal, credentials))
    }

    pub(super) async fn gssapi_mechanism(
        &mut self,
        user: &str,
        mechanisms: &[bytes::Bytes],
    ) -> anyhow::Result<GssapiMechanism> {
        // A new attempt: the last one's context goes.
        self.gss = None;
        let kerberos = self
            .conn
            .gateway
            .kerberos
            .clone()
            .filter(|k| k.gssapi.is_some());
        let krb5 = mechanisms
            .iter()
            .position(|m| m.as_ref() == russh::server::GSSAPI_KRB5_MECHANISM);
        let (Some(kerberos), Some(index)) = (kerberos, krb5) else {
            // Off, or no Kerberos among the mechanisms: not an attempt (the client moves on).
            return Ok(GssapiMechanism::Reject(keep_methods_on_offer(
                Auth::reject(),
                &self.conn.gateway.config,
            )));
        };
        if let Some(refused) = self.admit(user, GSSAPI)? {
            self.conn.audit_written().await;
            return Ok(GssapiMechanism::Reject(keep_methods_on_offer(
                refused,
                &self.conn.gateway.config,
            )));
        }
        let context = match kerberos.gssapi.as_ref() {
            Some(acceptor) => tokio::task::block_in_place(|| acceptor.context()),
            None => Err(crate::kerberos::KerberosError::Unavailable(
                "GSSAPI logins are off".into(),
            )),
        };
        match context {
            Ok(context) => {
                self.gss = Some(Box::new(context));
                Ok(GssapiMechanism::Select(index))
            }
            Err(e) => Ok(GssapiMechanism::Reject(self.gssapi_refused(user, e).await?)),
        }
    }

    pub(super) async fn gssapi_token(
        &mut self,
        user: &str,
        token: &[u8],
    ) -> anyhow::Result<GssapiAccept> {
        use crate::kerberos::gssapi::Step;
        let Some(context) = self.gss.as_mut() else {
            return Ok(GssapiAccept::Reject {
                error_token: None,
                auth: keep_methods_on_offer(Auth::reject(), &self.conn.gateway.config),
            });
        };
        match tokio::task::block_in_place(|| context.accept(token)) {
            Ok(Step::Continue(out)) => Ok(GssapiAccept::Continue(out)),
            Ok(Step::Complete(out)) => Ok(GssapiAccept::Complete(out)),
            Err(refused) => Ok(GssapiAccept::Reject {
                error_token: refused.error_token,
                auth: self.gssapi_refused(user, refused.error).await?,
            }),
        }
    }

    pub(super) async fn gssapi_mic(
        &mut self,
        user: &str,
        mic_data: &[u8],
        mic: &[u8],
    ) -> anyhow::Result<Auth> {
        let Some(mut context) = self.gss.take() else {
            return Ok(keep_methods_on_offer(
                Auth::reject(),
                &self.conn.gateway.config,
            ));
        };
        let granted =
            tokio::task::block_in_place(|| self.gssapi_grant(&mut context, user, mic_data, mic));
        // Every GSS object of the login is released before the answer.
        drop(context);
        let grant = match granted {
            Ok(grant) => grant,
            Err(e) => return self.gssapi_refused(user, e).await,
        };
        let info = self.conn.info(user);
        let outcome = self.authorize_vouched(&info, grant).await;
        let answer = self.conclude(user, GSSAPI, &info, outcome).await;
        self.conn.audit_written().await;
        answer.map(|a| keep_methods_on_offer(a, &self.conn.gateway.config))
    }
}
