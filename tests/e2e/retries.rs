//! Retries as sshd allows them: a failed password or key leaves the methods on offer until the
//! attempt cap, for OpenSSH, paramiko and asyncssh alike.
use std::process::{Command, Stdio};

use serde_json::json;

use crate::harness::*;

/// OpenSSH options for password authentication only.
const PASSWORD_ONLY: &[&str] = &[
    "-o",
    "PreferredAuthentications=password",
    "-o",
    "PubkeyAuthentication=no",
];

/// An SSH_ASKPASS program that answers with the next line of `answers` at each prompt.
fn askpass(gw: &Gateway, answers: &[&str]) -> std::path::PathBuf {
    let dir = gw.dir.path();
    let list = dir.join("answers");
    std::fs::write(&list, answers.join("\n") + "\n").unwrap();
    let count = dir.join("asked");
    let script = dir.join("askpass.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nn=$(cat {count} 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > {count}\nsed -n \"${{n}}p\" {list}\n",
            count = count.display(),
            list = list.display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    script
}

/// `ssh` that takes its passwords from `askpass`, with `extra` options.
fn ssh_with_askpass(gw: &Gateway, askpass: &std::path::Path, extra: &[&str]) -> Command {
    let mut c = Command::new("setsid");
    c.arg("-w")
        .arg("ssh")
        .args(gw.common_ssh_options())
        // OpenSSH takes the first value of an option: `extra` may override the default.
        .args(extra)
        .args(["-o", "NumberOfPasswordPrompts=3"])
        .arg(format!("{USER}@127.0.0.1"))
        .env("SSH_ASKPASS", askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .stdin(Stdio::null());
    c
}

#[test]
fn openssh_retries_a_mistyped_password() {
    let gw = Gateway::start(json!({}));
    let pass = askpass(&gw, &["wrong horse", PASSWORD]);
    let mut ssh = ssh_with_askpass(&gw, &pass, PASSWORD_ONLY);
    ssh.arg("echo second-try");
    let out = run(ssh, b"");
    assert_eq!(
        text(&out.stdout),
        "second-try\n",
        "{out:?}\n{}",
        gw.log_text()
    );
    let asked = std::fs::read_to_string(gw.dir.path().join("asked")).unwrap();
    assert_eq!(
        asked.trim(),
        "2",
        "OpenSSH was asked for the password twice"
    );
    gw.assert_no_containers();
}

#[test]
fn openssh_falls_back_from_an_unknown_key_to_the_password() {
    let gw = Gateway::start(json!({}));
    let unknown = unknown_key(&gw);
    let pass = askpass(&gw, &[PASSWORD]);
    let key = unknown.display().to_string();
    let mut ssh = ssh_with_askpass(
        &gw,
        &pass,
        &[
            "-o",
            "PreferredAuthentications=publickey,password",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            &key,
        ],
    );
    ssh.arg("echo after-key");
    let out = run(ssh, b"");
    assert_eq!(
        text(&out.stdout),
        "after-key\n",
        "{out:?}\n{}",
        gw.log_text()
    );
    gw.assert_no_containers();
}

#[test]
fn paramiko_and_asyncssh_fall_back_from_an_unknown_key_to_the_password() {
    let gw = Gateway::start(json!({}));
    let unknown = unknown_key(&gw);
    let out = Command::new("python3")
        .arg(workspace().join("tests/e2e/retry_clients.py"))
        .arg(gw.port.to_string())
        .arg(USER)
        .arg(PASSWORD)
        .arg(&unknown)
        .output()
        .expect("python3 runs");
    let printed = text(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}\n{}\n{}",
        text(&out.stderr),
        gw.log_text()
    );
    assert!(printed.contains("paramiko ok"), "{printed}");
    assert!(printed.contains("asyncssh ok"), "{printed}");
    gw.assert_no_containers();
}

/// The attempt cap still holds when the methods stay on offer.
#[test]
fn the_sixth_wrong_password_ends_the_connection() {
    let gw = Gateway::start(json!({}));
    let pass = askpass(&gw, &["w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8"]);
    let mut ssh = ssh_with_askpass(
        &gw,
        &pass,
        &[PASSWORD_ONLY, &["-o", "NumberOfPasswordPrompts=8"]].concat(),
    );
    ssh.arg("true");
    let out = run(ssh, b"");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let asked: u32 = std::fs::read_to_string(gw.dir.path().join("asked"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Six tries are answered; the seventh (if the client types it) ends the connection.
    assert!(
        (6..=7).contains(&asked),
        "asked {asked} times for 8 allowed prompts"
    );
}

/// A key pair the gateway's users do not have.
fn unknown_key(gw: &Gateway) -> std::path::PathBuf {
    let key = gw.dir.path().join("unknown_ed25519");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen runs");
    assert!(out.status.success(), "{out:?}");
    key
}
