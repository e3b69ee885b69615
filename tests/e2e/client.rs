//! A programmable SSH client (russh) for what the OpenSSH client cannot send on demand:
//! repeated password attempts on one connection and `signal` channel requests.
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, AuthResult, Handle};
use russh::keys::{load_secret_key, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Sig};

use crate::harness::shared;

pub struct AcceptAny;

impl client::Handler for AcceptAny {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

pub async fn connect(port: u16) -> Handle<AcceptAny> {
    let config = Arc::new(client::Config {
        inactivity_timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    });
    client::connect(config, ("127.0.0.1", port), AcceptAny)
        .await
        .expect("russh client connects")
}

pub async fn login(port: u16, user: &str) -> Handle<AcceptAny> {
    let mut h = connect(port).await;
    let key = load_secret_key(&shared().key, None).expect("client key");
    let auth = h
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), None))
        .await
        .expect("auth exchange");
    assert!(
        matches!(auth, AuthResult::Success),
        "public key login failed: {auth:?}"
    );
    h
}

/// Tries passwords until the server stops answering; returns how many were answered.
pub async fn count_password_attempts(port: u16, user: &str, tries: usize) -> usize {
    let mut h = connect(port).await;
    let mut answered = 0;
    for _ in 0..tries {
        match h.authenticate_password(user, "wrong password").await {
            Ok(AuthResult::Failure { .. }) => answered += 1,
            Ok(AuthResult::Success) => panic!("a wrong password was accepted"),
            Err(_) => break,
        }
    }
    answered
}

/// Reads a channel until it closes; returns its exit status.
pub async fn exit_status(ch: &mut russh::Channel<client::Msg>) -> Option<u32> {
    let mut status = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(60), ch.wait()).await {
            Ok(Some(ChannelMsg::ExitStatus { exit_status })) => status = Some(exit_status),
            Ok(Some(ChannelMsg::Close) | None) | Err(_) => return status,
            Ok(Some(_)) => {}
        }
    }
}

/// Runs `command`, sends `signal` after `delay`, returns (stdout, exit status, exit signal).
pub async fn exec_and_signal(
    port: u16,
    command: &str,
    delay: Duration,
    signal: Sig,
) -> (String, Option<u32>, Option<String>) {
    let h = login(port, crate::harness::USER).await;
    let mut ch = h.channel_open_session().await.expect("session");
    ch.exec(true, command).await.expect("exec");
    let mut stdout = Vec::new();
    let mut status = None;
    let mut sig = None;
    let mut sent = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let msg = if sent {
            tokio::time::timeout_at(deadline, ch.wait())
                .await
                .expect("no answer within 60 s")
        } else {
            match tokio::time::timeout(delay, ch.wait()).await {
                Ok(m) => m,
                Err(_) => {
                    ch.signal(signal.clone()).await.expect("signal sent");
                    sent = true;
                    continue;
                }
            }
        };
        match msg {
            Some(ChannelMsg::Data { data }) => stdout.extend_from_slice(&data),
            Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
            Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                sig = Some(format!("{signal_name:?}"))
            }
            Some(ChannelMsg::Close) | None => break,
            Some(_) => {}
        }
    }
    (String::from_utf8_lossy(&stdout).into_owned(), status, sig)
}
