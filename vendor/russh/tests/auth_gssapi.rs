//! containerssh patch: the server side of `gssapi-with-mic` (RFC 4462), driven by russh's own
//! client with a toy mechanism: tokens are plain strings and a "MIC" is `mic:` followed by the
//! data it covers, so the test checks the exchange and the MIC data russh builds on both ends.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use russh::keys::{PrivateKey, PublicKeyOrCertificate, ssh_key};
use russh::server::{
    Auth, GSSAPI_KRB5_MECHANISM, GSSAPI_MAX_ROUNDS, GssapiAccept, GssapiMechanism,
};
use russh::{GssapiAuthenticator, GssapiError, GssapiStep, MethodKind, MethodSet, client, server};

struct AcceptServerKey;

impl client::Handler for AcceptServerKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// What the server's handler saw.
type Events = Arc<Mutex<Vec<String>>>;

/// Accepts the toy mechanism: `c1` → `s1`, `c2` → established with the final token `s2`.
/// `endless` answers every token with another; `fail_with` rejects the first token with that
/// error token.
#[derive(Clone, Default)]
struct ToyServer {
    events: Events,
    endless: bool,
    fail_with: Option<Vec<u8>>,
}

fn other_methods() -> Auth {
    Auth::Reject {
        proceed_with_methods: Some(MethodSet::from(
            &[MethodKind::GssapiWithMic, MethodKind::Password][..],
        )),
        partial_success: false,
    }
}

impl server::Handler for ToyServer {
    type Error = russh::Error;

    async fn auth_gssapi_mechanism(
        &mut self,
        user: &str,
        mechanisms: &[Bytes],
    ) -> Result<GssapiMechanism, Self::Error> {
        self.events
            .lock()
            .unwrap()
            .push(format!("mechanisms {user} {}", mechanisms.len()));
        Ok(
            match mechanisms.iter().position(|m| m == GSSAPI_KRB5_MECHANISM) {
                Some(index) => GssapiMechanism::Select(index),
                None => GssapiMechanism::Reject(other_methods()),
            },
        )
    }

    async fn auth_gssapi_token(
        &mut self,
        _user: &str,
        token: &[u8],
    ) -> Result<GssapiAccept, Self::Error> {
        self.events
            .lock()
            .unwrap()
            .push(format!("token {}", String::from_utf8_lossy(token)));
        if let Some(error_token) = &self.fail_with {
            return Ok(GssapiAccept::Reject {
                error_token: Some(error_token.clone()),
                auth: other_methods(),
            });
        }
        Ok(match (token, self.endless) {
            (_, true) => GssapiAccept::Continue(b"more".to_vec()),
            (b"c1", _) => GssapiAccept::Continue(b"s1".to_vec()),
            (b"c2", _) => GssapiAccept::Complete(Some(b"s2".to_vec())),
            _ => GssapiAccept::reject(),
        })
    }

    async fn channel_open_session(
        &mut self,
        _channel: russh::Channel<server::Msg>,
        reply: server::ChannelOpenHandle,
        _session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn auth_gssapi_mic(
        &mut self,
        user: &str,
        mic_data: &[u8],
        mic: &[u8],
    ) -> Result<Auth, Self::Error> {
        self.events.lock().unwrap().push(format!("mic {user}"));
        // RFC 4462 §3.5: ..., string user, string "ssh-connection", string "gssapi-with-mic".
        let mut tail = Vec::new();
        for part in [user.as_bytes(), b"ssh-connection", b"gssapi-with-mic"] {
            tail.extend_from_slice(&(part.len() as u32).to_be_bytes());
            tail.extend_from_slice(part);
        }
        let expected = [b"mic:".as_slice(), mic_data].concat();
        Ok(if mic_data.ends_with(&tail) && mic == expected {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }
}

/// A server that implements no GSSAPI: the trait's defaults.
struct NoGssapi;

impl server::Handler for NoGssapi {
    type Error = russh::Error;
}

/// The client's half of the toy mechanism; `how` says how it misbehaves.
#[derive(Clone, Copy, PartialEq)]
enum Client {
    Honest,
    WrongMic,
    NoMic,
    MicAtOnce,
    Endless,
}

struct ToyClient {
    how: Client,
    steps: usize,
    errors: Vec<GssapiError>,
}

impl ToyClient {
    fn new(how: Client) -> Self {
        Self {
            how,
            steps: 0,
            errors: Vec::new(),
        }
    }
}

impl GssapiAuthenticator for ToyClient {
    type Error = russh::SendError;

    async fn gssapi_step(
        &mut self,
        selected_mechanism: Option<Vec<u8>>,
        input_token: Option<Vec<u8>>,
        mic_data: Vec<u8>,
    ) -> Result<GssapiStep, Self::Error> {
        self.steps += 1;
        if let Some(mechanism) = &selected_mechanism {
            assert_eq!(mechanism, GSSAPI_KRB5_MECHANISM);
        }
        let mic = |data: &[u8]| Some([b"mic:".as_slice(), data].concat());
        Ok(match (self.how, input_token.as_deref()) {
            (Client::MicAtOnce, _) => GssapiStep::Complete {
                token: None,
                mic: mic(&mic_data),
            },
            (Client::Endless, _) => GssapiStep::Continue {
                token: b"again".to_vec(),
            },
            (_, None) => GssapiStep::Continue {
                token: b"c1".to_vec(),
            },
            (_, Some(b"s1")) => GssapiStep::Continue {
                token: b"c2".to_vec(),
            },
            (Client::Honest, Some(b"s2")) => GssapiStep::Complete {
                token: None,
                mic: mic(&mic_data),
            },
            (Client::WrongMic, Some(b"s2")) => GssapiStep::Complete {
                token: None,
                mic: Some(b"mic:forged".to_vec()),
            },
            (Client::NoMic, Some(b"s2")) => GssapiStep::Complete {
                token: None,
                mic: None,
            },
            (_, Some(other)) => panic!("unexpected server token {other:?}"),
        })
    }

    async fn gssapi_error(&mut self, error: GssapiError) {
        self.errors.push(error);
    }
}

async fn connect<H>(handler: H) -> client::Handle<AcceptServerKey>
where
    H: server::Handler<Error = russh::Error> + Send + 'static,
{
    let mut config = server::Config::default();
    config.auth_rejection_time = Duration::from_millis(1);
    config.auth_rejection_time_initial = Some(Duration::from_millis(1));
    config.methods = MethodSet::from(&[MethodKind::GssapiWithMic, MethodKind::Password][..]);
    config
        .keys
        .push(PrivateKey::random(&mut rand::rng(), ssh_key::Algorithm::Ed25519).unwrap());
    let config = Arc::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let session = server::run_stream(config, socket, handler).await.unwrap();
        let _ = session.await;
    });
    client::connect(Arc::new(client::Config::default()), addr, AcceptServerKey)
        .await
        .unwrap()
}

fn krb5() -> Vec<Vec<u8>> {
    vec![GSSAPI_KRB5_MECHANISM.to_vec()]
}

fn events(server: &ToyServer) -> Vec<String> {
    server.events.lock().unwrap().clone()
}

#[tokio::test]
async fn a_context_and_its_mic_authenticate() {
    let server = ToyServer::default();
    let mut session = connect(server.clone()).await;
    let mut gss = ToyClient::new(Client::Honest);
    // Another mechanism first: the handler picks the Kerberos one by its index.
    let offered = vec![
        b"\x06\x03\x2b\x06\x01".to_vec(),
        GSSAPI_KRB5_MECHANISM.to_vec(),
    ];
    let result = session
        .authenticate_gssapi_with_mic("alice", offered, &mut gss)
        .await
        .unwrap();
    assert_eq!(result, client::AuthResult::Success);
    assert_eq!(gss.steps, 3);
    assert_eq!(
        events(&server),
        ["mechanisms alice 2", "token c1", "token c2", "mic alice"]
    );
    // Authenticated: a session opens.
    session.channel_open_session().await.unwrap();
}

#[tokio::test]
async fn a_wrong_mic_is_rejected_and_the_next_attempt_starts_afresh() {
    let server = ToyServer::default();
    let mut session = connect(server.clone()).await;
    let mut gss = ToyClient::new(Client::WrongMic);
    let result = session
        .authenticate_gssapi_with_mic("alice", krb5(), &mut gss)
        .await
        .unwrap();
    let client::AuthResult::Failure {
        remaining_methods, ..
    } = result
    else {
        panic!("a forged MIC was accepted");
    };
    assert!(remaining_methods.contains(&MethodKind::GssapiWithMic));
    let mut gss = ToyClient::new(Client::Honest);
    let result = session
        .authenticate_gssapi_with_mic("alice", krb5(), &mut gss)
        .await
        .unwrap();
    assert_eq!(result, client::AuthResult::Success);
    assert_eq!(events(&server).len(), 8, "{:?}", events(&server));
}

#[tokio::test]
async fn gssapi_without_a_mic_is_refused() {
    let server = ToyServer::default();
    let mut session = connect(server.clone()).await;
    let mut gss = ToyClient::new(Client::NoMic);
    let result = session
        .authenticate_gssapi_with_mic("alice", krb5(), &mut gss)
        .await
        .unwrap();
    assert!(!result.success());
    // The handler never saw a MIC to judge.
    assert_eq!(
        events(&server),
        ["mechanisms alice 1", "token c1", "token c2"]
    );
}

#[tokio::test]
async fn a_mic_before_the_context_is_established_is_refused() {
    let server = ToyServer::default();
    let mut session = connect(server.clone()).await;
    let mut gss = ToyClient::new(Client::MicAtOnce);
    let result = session
        .authenticate_gssapi_with_mic("alice", krb5(), &mut gss)
        .await
        .unwrap();
    assert!(!result.success());
    assert_eq!(events(&server), ["mechanisms alice 1"]);
}

#[tokio::test]
async fn an_endless_exchange_is_cut_off() {
    let server = ToyServer {
        endless: true,
        ..ToyServer::default()
    };
    let mut session = connect(server.clone()).await;
    let mut gss = ToyClient::new(Client::Endless);
    let result = session
        .authenticate_gssapi_with_mic("alice", krb5(), &mut gss)
        .await
        .unwrap();
    assert!(!result.success());
    let tokens = events(&server)
        .iter()
        .filter(|e| e.starts_with("token"))
        .count();
    assert_eq!(tokens, GSSAPI_MAX_ROUNDS as usize);
}

#[tokio::test]
async fn an_unknown_mechanism_is_rejected_with_the_handlers_methods() {
    let server = ToyServer::default();
    let mut session = connect(server.clone()).await;
    let mut gss = ToyClient::new(Client::Honest);
    let result = session
        .authenticate_gssapi_with_mic("alice", vec![b"\x06\x03\x2b\x06\x01".to_vec()], &mut gss)
        .await
        .unwrap();
    assert_eq!(
        result,
        client::AuthResult::Failure {
            remaining_methods: MethodSet::from(
                &[MethodKind::GssapiWithMic, MethodKind::Password][..]
            ),
            partial_success: false,
        }
    );
    assert_eq!(gss.steps, 0);
}

#[tokio::test]
async fn an_error_token_reaches_the_client_before_the_failure() {
    let server = ToyServer {
        fail_with: Some(b"KRB-ERROR".to_vec()),
        ..ToyServer::default()
    };
    let mut session = connect(server.clone()).await;
    let mut gss = ToyClient::new(Client::Honest);
    let result = session
        .authenticate_gssapi_with_mic("alice", krb5(), &mut gss)
        .await
        .unwrap();
    assert!(!result.success());
    assert_eq!(gss.errors, [GssapiError::ErrorToken(b"KRB-ERROR".to_vec())]);
}

#[tokio::test]
async fn a_handler_without_gssapi_rejects_it() {
    let mut session = connect(NoGssapi).await;
    let mut gss = ToyClient::new(Client::Honest);
    let result = session
        .authenticate_gssapi_with_mic("alice", krb5(), &mut gss)
        .await
        .unwrap();
    assert!(!result.success());
    assert_eq!(gss.steps, 0);
}
