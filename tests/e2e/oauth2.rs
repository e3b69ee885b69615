//! OAuth2 logins (keyboard-interactive): GitHub's device flow with OpenSSH, its fallback to
//! the authorization code flow with paramiko, OIDC's authorization code flow with asyncssh and
//! its device flow with OpenSSH, against a local stand-in for GitHub and an OIDC provider over
//! real HTTPS (tests/e2e/oauth2_provider.py). The tests play the user at the browser through
//! the stand-in's control API, or follow the redirect to the gateway's redirect page.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;
use crate::webhook_server::Pki;

const CLIENT_ID: &str = "test-client";
const CLIENT_SECRET: &str = "test-secret";

/// The stand-in provider, stopped when dropped.
struct Provider {
    child: Child,
    port: u16,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl Provider {
    /// `github_redirect` is the callback URL registered for the GitHub application.
    fn start(github_redirect: &str) -> Provider {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::generate(dir.path());
        let users = dir.path().join("users.json");
        let person = |login: &str, id: u64, two_fa: bool, orgs: Value| {
            json!({"id": id, "node_id": format!("U_{login}"), "name": format!("{login} Example"),
                   "email": format!("{login}@example.org"), "two_factor_authentication": two_fa,
                   "orgs": orgs,
                   "oidc": {"sub": format!("sub-{login}"), "preferred_username": login,
                            "email": format!("{login}@example.org"), "groups": ["dev"]}})
        };
        std::fs::write(
            &users,
            json!({
                "alice": person("alice", 101, true, json!({"acme": "active"})),
                "bob": person("bob", 102, true, json!({"acme": "active"})),
                "carol": person("carol", 103, true, json!({"other": "active"})),
                "dave": person("dave", 104, false, json!({"acme": "active"})),
            })
            .to_string(),
        )
        .expect("users");
        let mut child = Command::new("python3")
            .arg(workspace().join("tests/e2e/oauth2_provider.py"))
            .arg("--cert")
            .arg(&pki.server_cert)
            .arg("--key")
            .arg(&pki.server_key)
            .arg("--users")
            .arg(&users)
            .args([
                "--port",
                "0",
                "--client-id",
                CLIENT_ID,
                "--client-secret",
                CLIENT_SECRET,
            ])
            .args(["--github-redirect-uri", github_redirect])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("provider starts");
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("provider did not start: {line:?}"));
        Provider {
            child,
            port,
            ca: pki.ca_cert.clone(),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// A control API call (curl, trusting the test CA).
    fn control(&self, method: &str, path: &str, body: Value) -> Value {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "-X", method, "--cacert"])
            .arg(&self.ca)
            .args([
                "-H",
                "Content-Type: application/json",
                "--data",
                &body.to_string(),
            ])
            .arg(self.url(path))
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "curl {path}: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn get(&self, path: &str) -> Value {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&self.ca)
            .arg(self.url(path))
            .output()
            .expect("curl runs");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn approve(&self, user_code: &str, login: &str) {
        let answer = self.control(
            "POST",
            "/test/approve",
            json!({"user_code": user_code, "login": login}),
        );
        assert!(answer.get("error").is_none(), "approve: {answer}");
    }

    /// Tokens of `login` in the state `which` ("active", "revoked").
    fn tokens(&self, login: &str, which: &str) -> Vec<String> {
        self.get("/test/tokens")[which]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|t| t["login"] == login)
            .filter_map(|t| t["token"].as_str().map(str::to_string))
            .collect()
    }

    fn requests(&self, path: &str) -> Vec<Value> {
        self.get("/test/log")
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r["path"] == path)
            .collect()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// OpenSSH with keyboard-interactive only, as a user would run it (instructions on stderr,
/// which goes to a file the test reads while it waits).
fn openssh(gw: &Gateway, user: &str, command: &str, stderr: &Path) -> Child {
    Command::new("ssh")
        .args(["-p", &gw.port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "PreferredAuthentications=keyboard-interactive",
            "-o",
            "PubkeyAuthentication=no",
        ])
        .args(["-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=30"])
        .arg(format!("{user}@127.0.0.1"))
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).expect("stderr file"))
        .spawn()
        .expect("ssh starts")
}

/// Waits for the device flow's code in the client's output.
fn user_code(stderr: &Path) -> String {
    let mut code = String::new();
    wait_until(
        "the device code shown by ssh",
        Duration::from_secs(60),
        || {
            let text = std::fs::read_to_string(stderr).unwrap_or_default();
            match text.split("Enter the following code: ").nth(1) {
                Some(rest) => {
                    code = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    !code.is_empty()
                }
                None => false,
            }
        },
    );
    code
}

/// A device-flow login with OpenSSH as `ssh_user`, approved in the "browser" as `login`:
/// (exit status, stdout, stderr).
fn device_login(
    gw: &Gateway,
    provider: &Provider,
    ssh_user: &str,
    login: &str,
    command: &str,
) -> (Option<i32>, String, String) {
    let stderr = gw
        .dir
        .path()
        .join(format!("ssh-{ssh_user}-{}.err", free_port()));
    let child = openssh(gw, ssh_user, command, &stderr);
    let code = user_code(&stderr);
    provider.approve(&code, login);
    finish(child, &stderr)
}

fn finish(mut child: Child, stderr: &Path) -> (Option<i32>, String, String) {
    let status = wait_timeout(&mut child, Duration::from_secs(90));
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("ssh output");
    (
        status.and_then(|s| s.code()),
        text(&out.stdout),
        std::fs::read_to_string(stderr).unwrap_or_default(),
    )
}

fn github_oauth2(provider: &Provider, redirect_port: u16) -> Value {
    json!({
        "clientId": CLIENT_ID,
        "clientSecret": CLIENT_SECRET,
        "provider": "github",
        "github": {
            "url": provider.url(""),
            "apiurl": provider.url("/api"),
            "cacert": provider.ca.to_string_lossy(),
            "requireOrgMembership": "acme",
            "require2FA": true,
        },
        "redirect": {"listen": format!("127.0.0.1:{redirect_port}")},
    })
}

/// ContainerSSH's form (auth.keyboardInteractive.method: oauth2) with GitHub, as a migrating
/// operator writes it: OpenSSH, device flow; the token is revoked when the connection ends.
#[test]
fn github_device_flow_with_openssh() {
    let redirect_port = free_port();
    let provider = Provider::start(&format!("http://127.0.0.1:{redirect_port}/"));
    let gw = Gateway::start_with_auth(
        json!({"keyboardInteractive": {"method": "oauth2", "oauth2": github_oauth2(&provider, redirect_port)}}),
        json!({}),
    );
    let (status, out, err) = device_login(
        &gw,
        &provider,
        "alice",
        "alice",
        "echo hello-$GITHUB_LOGIN-$(id -u)",
    );
    assert_eq!(
        status,
        Some(0),
        "stdout {out:?} stderr {err:?}\n{}",
        gw.log_text()
    );
    assert_eq!(out, "hello--1000\n");
    assert!(
        err.contains(&format!(
            "Please click the following link: {}",
            provider.url("/login/device")
        )),
        "{err}"
    );
    // The scopes the checks need were asked for.
    let asked = provider.requests("/login/device/code");
    let scope = asked[0]["form"]["scope"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        scope.contains("read:org") && scope.contains("read:user"),
        "{scope}"
    );
    // Revoked once the connection ended, and never written to the log.
    wait_until("the token revoked", Duration::from_secs(20), || {
        !provider.tokens("alice", "revoked").is_empty()
    });
    assert!(provider.tokens("alice", "active").is_empty());
    let token = &provider.tokens("alice", "revoked")[0];
    let log = gw.log_text();
    assert!(
        !log.contains(token.as_str()),
        "the access token is in the log"
    );
    assert!(
        log.contains("OAuth2 provider vouched for the user"),
        "{log}"
    );
    gw.assert_no_containers();
}

/// Every way a GitHub login is refused tells the user why, and gives the token back.
#[test]
fn github_refusals_say_why() {
    let redirect_port = free_port();
    let provider = Provider::start(&format!("http://127.0.0.1:{redirect_port}/"));
    let gw = Gateway::start_with_auth(
        Value::Null,
        json!({"oauth2": github_oauth2(&provider, redirect_port)}),
    );
    let attempt = |ssh_user: &str, approve: Option<&str>, name: &str| -> String {
        let stderr = gw.dir.path().join(format!("ssh-{name}.err"));
        let child = openssh(&gw, ssh_user, "true", &stderr);
        let code = user_code(&stderr);
        match approve {
            Some(login) => provider.approve(&code, login),
            None => {
                provider.control("POST", "/test/deny", json!({"user_code": code}));
            }
        }
        let (status, _, err) = finish(child, &stderr);
        assert_eq!(status, Some(255), "{name}: {err}");
        err
    };
    let err = attempt("alice", Some("bob"), "other-account");
    assert!(
        err.contains("Login failed: your GitHub login is bob, not alice"),
        "{err}"
    );
    let err = attempt("alice", None, "declined");
    assert!(
        err.contains("Login failed: the authorization was declined in the browser"),
        "{err}"
    );
    let err = attempt("carol", Some("carol"), "not-a-member");
    assert!(
        err.contains("not a member of the GitHub organization acme"),
        "{err}"
    );
    let err = attempt("dave", Some("dave"), "no-2fa");
    assert!(err.contains("turn on two-factor authentication"), "{err}");
    // Tokens issued for refused logins were revoked at once.
    for login in ["bob", "carol", "dave"] {
        assert!(
            provider.tokens(login, "active").is_empty(),
            "{login}'s token is still active"
        );
    }
    // A provider that answers nonsense: the service is unavailable, nothing panics.
    provider.control(
        "POST",
        "/test/settings",
        json!({"garbage": {"path": "/api/user", "body": "<html>oops</html>"}}),
    );
    let err = attempt("alice", Some("alice"), "garbage");
    assert!(err.contains("the login service is unavailable"), "{err}");
    let log = gw.log_text();
    assert!(log.contains("not the expected JSON"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    gw.assert_no_containers();
}

/// GitHub without its device flow (e.g. its hourly limit reached): the authorization code
/// flow through the gateway's redirect page, with paramiko playing user and browser.
#[test]
fn github_falls_back_to_the_code_flow_with_paramiko() {
    let redirect_port = free_port();
    let provider = Provider::start(&format!("http://127.0.0.1:{redirect_port}/"));
    let gw = Gateway::start_with_auth(
        Value::Null,
        json!({"oauth2": github_oauth2(&provider, redirect_port)}),
    );
    provider.control(
        "POST",
        "/test/settings",
        json!({"fail_next": {"path": "/login/device/code", "status": 400, "count": 1}}),
    );
    let out = Command::new("python3")
        .arg(workspace().join("tests/e2e/oauth2_client.py"))
        .args([&gw.port.to_string(), "alice"])
        .arg(&provider.ca)
        .arg("paramiko")
        .output()
        .expect("python3 runs");
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        text(&out.stderr),
        gw.log_text()
    );
    assert!(
        stdout.contains("Please click the following link to log in: https://127.0.0.1"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("REDIRECTED TO: http://127.0.0.1:{redirect_port}/")),
        "{stdout}"
    );
    assert!(stdout.contains("OUTPUT: paramiko-in"), "{stdout}");
    // The code was traded with the client secret.
    let traded = provider.requests("/login/oauth/access_token");
    assert!(
        traded
            .iter()
            .any(|r| r["form"]["client_secret"] == CLIENT_SECRET && r["form"]["code"].is_string()),
        "{traded:?}"
    );
    gw.assert_no_containers();
}

fn oidc_oauth2(provider: &Provider, redirect_port: u16, device: bool) -> Value {
    json!({
        "clientId": CLIENT_ID,
        "clientSecret": CLIENT_SECRET,
        "provider": "oidc",
        "oidc": {
            "url": provider.url("/oidc"),
            "cacert": provider.ca.to_string_lossy(),
            "deviceFlow": device,
            "authorizationCodeFlow": !device,
            "usernameField": "preferred_username",
            "redirectURI": format!("http://127.0.0.1:{redirect_port}/"),
        },
        "redirect": {"listen": format!("127.0.0.1:{redirect_port}")},
    })
}

/// OIDC, authorization code flow: asyncssh logs in with the code from the redirect page; a
/// code from elsewhere is refused with the reason shown.
#[test]
fn oidc_code_flow_with_asyncssh() {
    let redirect_port = free_port();
    let provider = Provider::start("http://127.0.0.1:1/unused");
    let gw = Gateway::start_with_auth(
        Value::Null,
        json!({"oauth2": oidc_oauth2(&provider, redirect_port, false)}),
    );
    let client = |paste: Option<&str>| {
        let mut c = Command::new("python3");
        c.arg(workspace().join("tests/e2e/oauth2_client.py"))
            .args([&gw.port.to_string(), "alice"])
            .arg(&provider.ca)
            .arg("asyncssh");
        if let Some(p) = paste {
            c.arg(p);
        }
        c.output().expect("python3 runs")
    };
    let out = client(None);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        text(&out.stderr),
        gw.log_text()
    );
    assert!(stdout.contains("OUTPUT: asyncssh-in"), "{stdout}");
    assert!(gw.log_text().contains("as_user=alice"), "{}", gw.log_text());
    // Revoked at the end through the discovery document's revocation endpoint.
    wait_until("the token revoked", Duration::from_secs(20), || {
        !provider.tokens("alice", "revoked").is_empty()
    });
    let out = client(Some("0123456789abcdef|forged"));
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("Login failed: the code is from another login"),
        "{stdout}"
    );
    // The redirect page escapes what it is given.
    let page = Command::new("curl")
        .args([
            "-sS",
            &format!("http://127.0.0.1:{redirect_port}/?state=%3Cscript%3E&code=x"),
        ])
        .output()
        .expect("curl");
    let page = text(&page.stdout);
    assert!(
        page.contains("&lt;script&gt;|x") && !page.contains("<script>|"),
        "{page}"
    );
    gw.assert_no_containers();
}

/// OIDC device flow with OpenSSH; the userinfo claims reach the container's user name check.
#[test]
fn oidc_device_flow_with_openssh() {
    let redirect_port = free_port();
    let provider = Provider::start("http://127.0.0.1:1/unused");
    let gw = Gateway::start_with_auth(
        Value::Null,
        json!({"oauth2": oidc_oauth2(&provider, redirect_port, true)}),
    );
    let stderr = gw.dir.path().join("ssh-oidc.err");
    let child = openssh(&gw, "bob", "echo oidc-ok", &stderr);
    let code = user_code(&stderr);
    assert!(
        std::fs::read_to_string(&stderr)
            .unwrap_or_default()
            .contains(&provider.url("/oidc/device/verify?user_code=")),
        "the complete verification link is shown"
    );
    provider.approve(&code, "bob");
    let (status, out, err) = finish(child, &stderr);
    assert_eq!(status, Some(0), "{err}\n{}", gw.log_text());
    assert_eq!(out, "oidc-ok\n");
    // The token requests authenticated the client with HTTP Basic.
    let polls = provider.requests("/oidc/token");
    assert!(
        polls.iter().all(|r| r["authorization"]
            .as_str()
            .is_some_and(|a| a.starts_with("Basic "))),
        "{polls:?}"
    );
    gw.assert_no_containers();
}

/// A client killed while its user is still in the browser: the gateway notices within a
/// polling round (not at the end of authTimeout) and stops asking the provider.
#[test]
fn a_client_that_leaves_during_the_device_flow_is_noticed() {
    let redirect_port = free_port();
    let provider = Provider::start(&format!("http://127.0.0.1:{redirect_port}/"));
    let gw = Gateway::start_with_auth(
        Value::Null,
        json!({"oauth2": github_oauth2(&provider, redirect_port)}),
    );
    let stderr = gw.dir.path().join("ssh-killed.err");
    let mut child = openssh(&gw, "alice", "true", &stderr);
    user_code(&stderr);
    // A few rounds of polling, then the client is gone.
    wait_until("the gateway polling", Duration::from_secs(20), || {
        provider.requests("/login/oauth/access_token").len() >= 2
    });
    child.kill().expect("kill ssh");
    let _ = child.wait();
    wait_until("the connection closed", Duration::from_secs(15), || {
        gw.log_text().contains("connection closed")
    });
    let polls = provider.requests("/login/oauth/access_token").len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        provider.requests("/login/oauth/access_token").len(),
        polls,
        "still polling after the client left"
    );
}

/// ContainerSSH's authz webhook beside the OAuth2 login: it gets the GitHub identity (user name
/// and metadata), may add environment, and may refuse (the token is then revoked at once).
#[test]
fn an_authz_webhook_decides_after_github() {
    use crate::webhook_server::{Answer, ClientAuth, Handler, WebhookServer};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let redirect_port = free_port();
    let provider = Provider::start(&format!("http://127.0.0.1:{redirect_port}/"));
    let pki_dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::generate(pki_dir.path());
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let handler: Handler = Arc::new(move |path, _body| {
        assert_eq!(path, "/authz");
        let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
        Answer::ok(json!({"success": first, "environment": {"AUTHZ": {"value": "checked"}}}))
    });
    let server = WebhookServer::start(&pki, ClientAuth::Required, handler);
    let hook = json!({"url": server.url, "authTimeout": "5s", "cacert": pki.ca_cert,
                      "cert": pki.client_cert, "key": pki.client_key});
    let gw = Gateway::start_with_auth(
        json!({
            "keyboardInteractive": {"method": "oauth2", "oauth2": github_oauth2(&provider, redirect_port)},
            "authz": {"method": "webhook", "webhook": hook},
        }),
        json!({}),
    );
    let login = || device_login(&gw, &provider, "alice", "alice", "echo authz-$AUTHZ");
    let (status, out, err) = login();
    assert_eq!(status, Some(0), "{err}\n{}", gw.log_text());
    assert_eq!(out, "authz-checked\n");
    let authz = server
        .requests()
        .into_iter()
        .find(|r| r.path == "/authz")
        .expect("an authz request");
    assert_eq!(authz.body["authenticatedUsername"], "alice");
    assert_eq!(
        authz.body["metadata"]["GITHUB_METHOD"]["value"], "device",
        "{}",
        authz.body
    );
    let (status, out, err) = login();
    assert_eq!(status, Some(255), "{out}{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    wait_until("both tokens revoked", Duration::from_secs(20), || {
        provider.tokens("alice", "revoked").len() == 2
    });
    gw.assert_no_containers();
}

/// ContainerSSH's `docker.execution.exposeAuthMetadataAsEnv: true`: the GitHub login's
/// metadata in the container's environment under its own names, the sensitive entries (the
/// token, the personal data) not.
#[test]
fn github_metadata_reaches_the_container_with_expose_auth_metadata_as_env() {
    let redirect_port = free_port();
    let provider = Provider::start(&format!("http://127.0.0.1:{redirect_port}/"));
    let gw = Gateway::start_with_auth(
        Value::Null,
        json!({"oauth2": github_oauth2(&provider, redirect_port),
               "docker": {"execution": {"exposeAuthMetadataAsEnv": true}}}),
    );
    let (status, out, err) = device_login(
        &gw,
        &provider,
        "alice",
        "alice",
        "echo method=$GITHUB_METHOD 2fa=$GITHUB_2FA token=${GITHUB_TOKEN:-none}",
    );
    assert_eq!(status, Some(0), "{err}\n{}", gw.log_text());
    assert_eq!(out, "method=device 2fa=true token=none\n");
    gw.assert_no_containers();
}

/// The login's deadline passes after the provider issued the token but before it said who
/// the user is (a slow /user): the login fails, and the token is still revoked.
#[test]
fn a_token_issued_to_a_login_cut_off_by_its_deadline_is_revoked() {
    let redirect_port = free_port();
    let provider = Provider::start(&format!("http://127.0.0.1:{redirect_port}/"));
    let mut oauth2 = github_oauth2(&provider, redirect_port);
    oauth2["authTimeout"] = json!("20s");
    let gw = Gateway::start_with_auth(
        json!({"keyboardInteractive": {"method": "oauth2", "oauth2": oauth2}}),
        json!({}),
    );
    // /api/user answers long after the login's deadline.
    provider.control("POST", "/test/settings", json!({"identity_delay": 60}));
    let (status, out, err) = device_login(&gw, &provider, "alice", "alice", "echo in");
    assert_eq!(status, Some(255), "stdout {out:?} stderr {err:?}");
    wait_until("the token revoked", Duration::from_secs(30), || {
        !provider.tokens("alice", "revoked").is_empty()
    });
    assert!(
        provider.tokens("alice", "active").is_empty(),
        "{}",
        gw.log_text()
    );
    gw.assert_no_containers();
}
