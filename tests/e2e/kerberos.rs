//! Kerberos logins against a real MIT KDC (tests/e2e/kdc.rs): passwords checked with the KDC
//! and verified with the gateway's keytab, the user's credentials in the container.
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;
use crate::kdc::{Kdc, OTHER_REALM};

const ALICE_PASSWORD: &str = "alice-kerberos-password";

/// ContainerSSH's form: `auth.password.method: kerberos`.
fn password_auth(kdc: &Kdc) -> Value {
    json!({"password": {"method": "kerberos", "kerberos": {
        "keytab": kdc.keytab,
        "acceptor": "any",
        "configPath": kdc.krb5_conf,
        "credentialCachePath": "/tmp/krb5cc",
        "enforceUsername": true,
        "clockSkew": "5m",
    }}})
}

#[test]
fn passwords_are_checked_with_the_kdc_and_verified_with_the_keytab() {
    let kdc = Kdc::start();
    kdc.add_user("alice", ALICE_PASSWORD);
    let gw = Gateway::start_with_auth(
        password_auth(&kdc),
        json!({"docker": {"execution": {"exposeAuthMetadataAsEnv": true}}}),
    );
    // The right password: in, with the credentials in the container and the principal in
    // the metadata.
    let mut ok = gw.ssh_password("alice", ALICE_PASSWORD);
    ok.arg("echo $KRB5CCNAME $KERBEROS_PRINCIPAL; test -s /tmp/krb5cc && echo has-credentials");
    let out = run(ok, b"");
    assert_eq!(
        text(&out.stdout),
        "FILE:/tmp/krb5cc alice@CONTAINERSSH.TEST\nhas-credentials\n",
        "{}\n{}",
        text(&out.stderr),
        gw.log_text()
    );
    assert!(gw
        .log_text()
        .contains("the KDC vouched for the user's password"));
    // A wrong password, an unknown user, a name with a realm: refused.
    for (user, password) in [
        ("alice", "not-the-password"),
        ("mallory", ALICE_PASSWORD),
        ("alice@OTHER.REALM", ALICE_PASSWORD),
    ] {
        let mut refused = gw.ssh_password(user, password);
        refused.arg("echo should-not-run");
        let out = run(refused, b"");
        assert_eq!(out.status.code(), Some(255), "{user}: {out:?}");
        assert!(!text(&out.stdout).contains("should-not-run"));
    }
    let log = gw.log_text();
    assert!(log.contains("authentication failed"), "{log}");
    assert!(
        !log.contains(ALICE_PASSWORD) && !log.contains("not-the-password"),
        "a password is in the log"
    );
    gw.assert_no_containers();
}

/// A KDC the gateway's keytab does not match (as a forged KDC would be): even the right
/// password is refused, because the ticket does not verify.
#[test]
fn a_ticket_that_does_not_verify_with_the_keytab_is_refused() {
    let kdc = Kdc::start();
    kdc.add_user("alice", ALICE_PASSWORD);
    let gw = Gateway::start_with_auth(password_auth(&kdc), json!({}));
    // The KDC's key for host/localhost changes; the gateway's keytab keeps the old one.
    kdc.kadmin("cpw -randkey host/localhost");
    let mut refused = gw.ssh_password("alice", ALICE_PASSWORD);
    refused.arg("echo should-not-run");
    let out = run(refused, b"");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(!text(&out.stdout).contains("should-not-run"));
    let log = gw.log_text();
    assert!(
        log.contains("could not be verified with the keytab"),
        "{log}"
    );
    gw.assert_no_containers();
}

/// The KDC down: the login is unavailable (said so in the log), not a wrong password; when
/// it is back, the user gets in from the same address.
#[test]
fn a_kdc_that_is_down_is_no_wrong_password() {
    let kdc = Kdc::start();
    kdc.add_user("alice", ALICE_PASSWORD);
    let auth = password_auth(&kdc);
    let krb5_conf = kdc.krb5_conf.clone();
    let conf = std::fs::read_to_string(&krb5_conf).expect("krb5.conf");
    // Point the realm at a port nobody listens on.
    let dead = free_port();
    let live_kdc = conf
        .lines()
        .find(|l| l.trim_start().starts_with("kdc = "))
        .expect("kdc line")
        .to_string();
    std::fs::write(
        &krb5_conf,
        conf.replace(&live_kdc, &format!("    kdc = 127.0.0.1:{dead}")),
    )
    .expect("write");
    let gw = Gateway::start_with_auth(
        auth,
        json!({"ssh": {"authRateLimit": {"maxFailuresPerUser": 2}}}),
    );
    for _ in 0..3 {
        let mut refused = gw.ssh_password("alice", ALICE_PASSWORD);
        refused.arg("true");
        assert_eq!(run(refused, b"").status.code(), Some(255));
    }
    wait_until(
        "the unavailable KDC in the log",
        Duration::from_secs(5),
        || gw.log_text().contains("the KDC could not be asked"),
    );
    std::fs::write(&krb5_conf, conf).expect("write");
    let mut ok = gw.ssh_password("alice", ALICE_PASSWORD);
    ok.arg("echo back");
    let out = run(ok, b"");
    assert_eq!(text(&out.stdout), "back\n", "{}", gw.log_text());
    gw.assert_no_containers();
}

/// `validate` checks the Kerberos settings and names the keys as written.
#[test]
fn kerberos_settings_are_validated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "auth:\n  password:\n    method: kerberos\n    kerberos:\n      keytab: /nonexistent/krb5.keytab\n      configPath: /nonexistent/krb5.conf\n      acceptor: \"not a principal\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_containerssh"))
        .arg("validate")
        .arg(&path)
        .output()
        .expect("containerssh runs");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{all}");
    for key in ["keytab", "configPath", "acceptor"] {
        assert!(
            all.contains(&format!("auth.password.kerberos.{key}: ")),
            "{key}: {all}"
        );
    }
}

// GSSAPI (`gssapi-with-mic`): OpenSSH with a ticket from `kinit`, accepted with the keytab.

const BOB_PASSWORD: &str = "bob-kerberos-password";

/// ContainerSSH's form: `auth.gssapi.method: kerberos`.
fn gssapi_auth(kdc: &Kdc) -> Value {
    json!({"gssapi": {"method": "kerberos", "kerberos": {
        "keytab": kdc.keytab,
        "acceptor": "any",
        "configPath": kdc.krb5_conf,
        "credentialCachePath": "/tmp/krb5cc",
        "enforceUsername": true,
    }}})
}

/// `ssh -o GSSAPIAuthentication=yes` as `user` to `localhost` (OpenSSH asks for
/// `host@localhost`: GSSAPITrustDNS is off) with the tickets in `ccache`.
fn ssh_gssapi(
    gw: &Gateway,
    kdc: &Kdc,
    user: &str,
    ccache: &std::path::Path,
    delegate: bool,
) -> std::process::Command {
    let mut c = std::process::Command::new("ssh");
    c.args(gw.common_ssh_options())
        .args([
            "-4",
            "-o",
            "BatchMode=yes",
            "-o",
            "GSSAPIAuthentication=yes",
            "-o",
            if delegate {
                "GSSAPIDelegateCredentials=yes"
            } else {
                "GSSAPIDelegateCredentials=no"
            },
            "-o",
            "PreferredAuthentications=gssapi-with-mic",
            "-o",
            "PubkeyAuthentication=no",
        ])
        .arg(format!("{user}@localhost"))
        .envs(kdc.env())
        .env("KRB5CCNAME", format!("FILE:{}", ccache.display()));
    c
}

/// The output of `command` run after a GSSAPI login (stderr and the gateway's log in the
/// failure message).
fn gssapi_output(
    gw: &Gateway,
    kdc: &Kdc,
    user: &str,
    ccache: &std::path::Path,
    delegate: bool,
    command: &str,
) -> String {
    let mut ssh = ssh_gssapi(gw, kdc, user, ccache, delegate);
    ssh.arg(command);
    let out = run(ssh, b"");
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        text(&out.stderr),
        gw.log_text()
    );
    stdout
}

/// A GSSAPI login as `user` with the tickets in `ccache` is refused; the log then says `why`.
fn assert_gssapi_refused(gw: &Gateway, kdc: &Kdc, user: &str, ccache: &std::path::Path, why: &str) {
    let mut refused = ssh_gssapi(gw, kdc, user, ccache, false);
    refused.arg("echo should-not-run");
    let out = run(refused, b"");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(!text(&out.stdout).contains("should-not-run"));
    wait_until("the refusal in the log", Duration::from_secs(5), || {
        gw.log_text().contains(why)
    });
}

const SHOW_CREDENTIALS: &str =
    "echo \"ccname=$KRB5CCNAME\"; test -s /tmp/krb5cc && echo has-credentials || echo no-credentials";

#[test]
fn gssapi_logins_accept_a_kerberos_ticket_and_pass_on_delegated_credentials() {
    let kdc = Kdc::start();
    kdc.add_user("alice", ALICE_PASSWORD);
    let gw = Gateway::start_with_auth(gssapi_auth(&kdc), json!({}));
    // A ticket, not delegated: in, without credentials in the container.
    let ccache = kdc.kinit("alice", ALICE_PASSWORD, false);
    assert_eq!(
        gssapi_output(&gw, &kdc, "alice", &ccache, false, SHOW_CREDENTIALS),
        "ccname=\nno-credentials\n"
    );
    let log = gw.log_text();
    assert!(
        log.contains("the client's Kerberos ticket vouched for the user"),
        "{log}"
    );
    assert!(log.contains("alice@CONTAINERSSH.TEST"), "{log}");
    // A forwardable ticket, delegated: the credentials are in the container at
    // credentialCachePath, and KRB5CCNAME points at them.
    let ccache = kdc.kinit("alice", ALICE_PASSWORD, true);
    assert_eq!(
        gssapi_output(&gw, &kdc, "alice", &ccache, true, SHOW_CREDENTIALS),
        "ccname=FILE:/tmp/krb5cc\nhas-credentials\n"
    );
    gw.assert_no_containers();
}

/// With enforceUsername, a ticket is good only for its own user name.
#[test]
fn gssapi_refuses_another_users_ticket() {
    let kdc = Kdc::start();
    kdc.add_user("alice", ALICE_PASSWORD);
    kdc.add_user("bob", BOB_PASSWORD);
    // The acceptor named as a principal (the other tests take any key of the keytab).
    let mut auth = gssapi_auth(&kdc);
    auth["gssapi"]["kerberos"]["acceptor"] = json!("host/localhost@CONTAINERSSH.TEST");
    let gw = Gateway::start_with_auth(auth, json!({}));
    let bobs = kdc.kinit("bob", BOB_PASSWORD, false);
    assert_gssapi_refused(
        &gw,
        &kdc,
        "alice",
        &bobs,
        "the principal bob@CONTAINERSSH.TEST may not log in as alice",
    );
    assert!(gw.log_text().contains("authentication failed"));
    // Bob's own name works with the same ticket.
    assert_eq!(
        gssapi_output(&gw, &kdc, "bob", &bobs, false, "echo bob-is-in"),
        "bob-is-in\n"
    );
    gw.assert_no_containers();
}

/// No ticket: OpenSSH cannot start a context, the method fails, the gateway carries on.
#[test]
fn gssapi_without_a_ticket_fails_and_nothing_breaks() {
    let kdc = Kdc::start();
    kdc.add_user("alice", ALICE_PASSWORD);
    let gw = Gateway::start_with_auth(gssapi_auth(&kdc), json!({}));
    let nothing = kdc.dir().join("no-such-ccache");
    let mut refused = ssh_gssapi(&gw, &kdc, "alice", &nothing, false);
    refused.arg("echo should-not-run");
    let out = run(refused, b"");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(!text(&out.stdout).contains("should-not-run"));
    // A ticket the keytab cannot accept: the service's key changed at the KDC, so the service
    // ticket ssh asks for is encrypted with a key the gateway's keytab does not have.
    kdc.kadmin("cpw -randkey host/localhost");
    let ccache = kdc.kinit("alice", ALICE_PASSWORD, false);
    assert_gssapi_refused(
        &gw,
        &kdc,
        "alice",
        &ccache,
        "the client's ticket was not accepted",
    );
    // The gateway is still up and serving.
    assert!(std::net::TcpStream::connect(("127.0.0.1", gw.port)).is_ok());
    assert!(!gw.log_text().contains("panicked"), "{}", gw.log_text());
    gw.assert_no_containers();
}

/// A principal of another realm the KDCs trust (cross-realm keys) gets a ticket for the
/// gateway, but is not the local user of the same name: with enforceUsername it is refused,
/// as sshd refuses it. Without enforceUsername it logs in, and the principal that vouched is
/// in the metadata for webhooks and the container.
#[test]
fn gssapi_principals_of_another_realm_are_not_local_users() {
    let kdc = Kdc::start();
    kdc.add_user("alice", ALICE_PASSWORD);
    kdc.add_other_realm_user("alice", "other-alice-password");
    let foreign = kdc.kinit(
        &format!("alice@{OTHER_REALM}"),
        "other-alice-password",
        false,
    );
    let gw = Gateway::start_with_auth(gssapi_auth(&kdc), json!({}));
    assert_gssapi_refused(
        &gw,
        &kdc,
        "alice",
        &foreign,
        "the principal alice@OTHER.TEST is no user of this gateway",
    );
    assert!(
        !gw.log_text()
            .contains("the client's Kerberos ticket vouched for the user"),
        "{}",
        gw.log_text()
    );
    // An instance of alice in the gateway's own realm is not alice either.
    kdc.add_user("alice/admin", "alice-admin-password");
    let admin = kdc.kinit("alice/admin", "alice-admin-password", false);
    assert_gssapi_refused(
        &gw,
        &kdc,
        "alice",
        &admin,
        "the principal alice/admin@CONTAINERSSH.TEST is no user of this gateway",
    );
    // The realm's own alice is still in (the same KDC, the same gateway).
    let local = kdc.kinit("alice", ALICE_PASSWORD, false);
    assert_eq!(
        gssapi_output(&gw, &kdc, "alice", &local, false, "echo alice-is-in"),
        "alice-is-in\n"
    );
    drop(gw);

    // enforceUsername off: the foreign principal may be alice, and says who it is.
    let mut auth = gssapi_auth(&kdc);
    auth["gssapi"]["kerberos"]["enforceUsername"] = json!(false);
    let gw = Gateway::start_with_auth(
        auth,
        json!({"docker": {"execution": {"exposeAuthMetadataAsEnv": true}}}),
    );
    assert_eq!(
        gssapi_output(
            &gw,
            &kdc,
            "alice",
            &foreign,
            false,
            "echo \"principal=$KERBEROS_PRINCIPAL\""
        ),
        "principal=alice@OTHER.TEST\n"
    );
    gw.assert_no_containers();
}
