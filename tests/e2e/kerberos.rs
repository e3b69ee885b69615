//! Kerberos logins against a real MIT KDC (tests/e2e/kdc.rs): passwords checked with the KDC
//! and verified with the gateway's keytab, the user's credentials in the container.
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;
use crate::kdc::Kdc;

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
    let gw = Gateway::start_with_auth(password_auth(&kdc), json!({}));
    // The right password: in, with the credentials in the container.
    let mut ok = gw.ssh_password("alice", ALICE_PASSWORD);
    ok.arg("echo $KRB5CCNAME; test -s /tmp/krb5cc && echo has-credentials");
    let out = run(ok, b"");
    assert_eq!(
        text(&out.stdout),
        "FILE:/tmp/krb5cc\nhas-credentials\n",
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
