use std::process::Command;

use serde_json::{json, Value};

use crate::harness::*;

/// Starts a session that waits, inspects its container, then lets it finish.
fn inspect_while_running(gw: &Gateway) -> Value {
    let mut ssh = gw.ssh();
    ssh.arg("sleep 4");
    ssh.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = ssh.spawn().expect("ssh starts");
    let id = gw.wait_for_container();
    let out = Command::new("docker")
        .args(["inspect", &id])
        .output()
        .expect("docker inspect");
    let _ = child.wait();
    let v: Value = serde_json::from_slice(&out.stdout).expect("inspect json");
    v[0].clone()
}

#[test]
fn secure_defaults_reach_the_container() {
    let gw = Gateway::start(json!({}));
    let c = inspect_while_running(&gw);
    let host = &c["HostConfig"];
    assert_eq!(host["CapDrop"], json!(["ALL"]));
    assert!(
        host["SecurityOpt"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "no-new-privileges"),
        "{host}"
    );
    assert_eq!(host["PidsLimit"], json!(1024));
    assert_eq!(c["Config"]["Labels"]["containerssh.username"], json!(USER));
    assert_eq!(
        c["Config"]["Labels"]["containerssh.instance"],
        json!(gw.instance())
    );
    gw.assert_no_containers();
}

#[test]
fn hardening_options_reach_the_container() {
    let gw = Gateway::start(json!({"docker": {"execution": {"host": {
        "usernsmode": "host",
        "tmpfs": {"/tmp": "rw,noexec,nosuid,size=65536k", "/run": "rw,noexec,nosuid,size=65536k"},
        "readonlyRootfs": true,
        "oomKillDisable": true,
        "oomScoreAdj": 500,
        "cpusetCpus": "0",
        "cpusetMems": "0",
        "cpuPeriod": 100000,
        "cpuQuota": 50000,
        "networkDisabled": true,
        "resources": {
            "memory": 67108864,
            "memoryReservation": 33554432,
            "memorySwap": 134217728,
            "memorySwappiness": 60,
            "pidsLimit": 77
        }
    }}}}));
    let c = inspect_while_running(&gw);
    let h = &c["HostConfig"];
    assert_eq!(h["UsernsMode"], json!("host"));
    assert_eq!(h["Tmpfs"]["/tmp"], json!("rw,noexec,nosuid,size=65536k"));
    assert_eq!(h["ReadonlyRootfs"], json!(true));
    assert_eq!(h["OomKillDisable"], json!(true));
    assert_eq!(h["OomScoreAdj"], json!(500));
    assert_eq!(h["CpusetCpus"], json!("0"));
    assert_eq!(h["CpusetMems"], json!("0"));
    assert_eq!(h["CpuPeriod"], json!(100000));
    assert_eq!(h["CpuQuota"], json!(50000));
    assert_eq!(h["Memory"], json!(67108864));
    assert_eq!(h["MemoryReservation"], json!(33554432));
    assert_eq!(h["PidsLimit"], json!(77));
    assert_eq!(c["Config"]["NetworkDisabled"], json!(true));
    // Swap limits need kernel swap accounting; when present, Docker keeps the values.
    if h["MemorySwap"] != json!(null) && h["MemorySwap"] != json!(0) {
        assert_eq!(h["MemorySwap"], json!(134217728));
    }
    if h["MemorySwappiness"] != json!(null) {
        assert_eq!(h["MemorySwappiness"], json!(60));
    }
    gw.assert_no_containers();
}

/// Options this engine cannot apply (storage quotas on fuse-overlayfs/overlay-on-ext4,
/// real-time CPU without CONFIG_RT_GROUP_SCHED) must still reach Docker: its refusal names them,
/// and the client gets a reason instead of a silent close.
#[test]
fn unsupported_options_reach_docker_and_fail_with_a_reason() {
    for host in [
        json!({"storageopt": {"size": 524288000}}),
        json!({"cpuRealtimePeriod": 10000, "cpuRealtimeQuota": 1000}),
    ] {
        let gw = Gateway::start(json!({"docker": {"execution": {"host": host}}}));
        let mut ssh = gw.ssh();
        ssh.arg("echo should-not-run");
        let out = run(ssh, b"");
        let supported = out.status.success();
        let log = gw.log_text();
        if !supported {
            assert!(
                text(&out.stderr).contains("could not be started"),
                "{out:?}"
            );
            assert!(log.contains("cannot start the container"), "{log}");
        } else {
            // The engine applied it (e.g. overlay on xfs with pquota): then it shows on inspect.
            eprintln!("engine supports {host}; skipping the refusal check");
        }
        gw.assert_no_containers();
    }
}

#[test]
fn pull_policy_never_with_a_missing_image_gives_a_clear_reason() {
    let gw = Gateway::start(json!({"docker": {"execution": {
        "container": {"image": "containerssh-test/does-not-exist:1"},
        "imagePullPolicy": "Never"
    }}}));
    let mut ssh = gw.ssh();
    ssh.arg("true");
    let out = run(ssh, b"");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("could not be started"),
        "{out:?}"
    );
    assert!(
        gw.log_text().contains("imagePullPolicy is Never"),
        "{}",
        gw.log_text()
    );
}

#[test]
fn pull_policy_if_not_present_uses_the_local_image_and_always_pulls() {
    // IfNotPresent: the image exists locally, so no pull happens (a pull would fail here).
    let gw = Gateway::start(json!({"docker": {"execution": {"imagePullPolicy": "IfNotPresent"}}}));
    let mut ssh = gw.ssh();
    ssh.arg("echo local-image");
    let out = run(ssh, b"");
    assert_eq!(text(&out.stdout), "local-image\n", "{out:?}");
    assert!(!gw.log_text().contains("pulling image"));
    drop(gw);
    // Always: the gateway pulls even a present image. The registry is a closed local port,
    // so the pull is attempted and fails fast, without any DNS lookup.
    let tagged = "127.0.0.1:9/containerssh-test/guest:5";
    assert!(Command::new("docker")
        .args(["tag", IMAGE, tagged])
        .status()
        .unwrap()
        .success());
    let gw = Gateway::start(json!({"docker": {"execution": {
        "container": {"image": tagged},
        "imagePullPolicy": "Always"
    }}}));
    let mut ssh = gw.ssh();
    ssh.arg("true");
    let out = run(ssh, b"");
    let _ = Command::new("docker").args(["rmi", tagged]).status();
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let log = gw.log_text();
    assert!(
        log.contains("pulling image") && log.contains("cannot pull image"),
        "{log}"
    );
}

/// An entrypoint in the container settings replaces the image's and gets the idle command as
/// its arguments, as Docker does; the session's programs run in the container it started.
#[test]
fn a_configured_entrypoint_wraps_the_idle_command() {
    let gw = Gateway::start(json!({"docker": {"execution": {"container": {
        "entrypoint": ["/bin/sh", "-c", "echo wrapped > /tmp/entrypoint-ran; exec \"$@\"", "entrypoint"]
    }}}}));
    let mut ssh = gw.ssh();
    ssh.arg("cat /tmp/entrypoint-ran");
    let out = run(ssh, b"");
    assert_eq!(text(&out.stdout), "wrapped\n", "{out:?}\n{}", gw.log_text());
    assert!(
        !gw.log_text().contains("Entrypoint"),
        "no warning: it is applied"
    );
    gw.assert_no_containers();
}

/// Docker's other HostConfig options, as a ContainerSSH configuration writes them (Go's YAML
/// field names, lowercased, nested too), reach the engine: a read-only bind mount beside the
/// gateway's own, a tmpfs mount, ulimits, a CPU limit.
#[test]
fn containerssh_host_options_reach_the_container() {
    let shared = tempfile::tempdir().expect("tempdir");
    std::fs::write(shared.path().join("motd"), "from the host\n").expect("write");
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(shared.path(), mode).expect("chmod");
    let gw = Gateway::start(json!({"docker": {"execution": {"host": {
        "mounts": [
            {"type": "bind", "source": shared.path().to_string_lossy(), "target": "/shared",
             "readonly": true, "bindoptions": {"propagation": "rprivate"}},
            {"type": "tmpfs", "target": "/scratch",
             "tmpfsoptions": {"sizebytes": 1048576, "mode": 0o1777}}
        ],
        "ulimits": [{"name": "nofile", "soft": 321, "hard": 654}],
        "nanocpus": 500_000_000,
        "autoremove": true
    }}}}));
    let c = inspect_while_running(&gw);
    let host = &c["HostConfig"];
    assert_eq!(host["NanoCpus"], json!(500_000_000), "{host}");
    assert_eq!(
        host["AutoRemove"],
        json!(false),
        "the gateway removes containers"
    );
    let targets: Vec<&str> = host["Mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["Target"].as_str())
        .collect();
    assert!(
        targets.contains(&"/shared") && targets.contains(&"/scratch"),
        "{host}"
    );
    let mut ssh = gw.ssh();
    ssh.arg(
        "cat /shared/motd; touch /shared/x 2>/dev/null && echo writable || echo read-only; \
         ulimit -n; ulimit -Hn; echo ok > /scratch/f && cat /scratch/f",
    );
    let out = run(ssh, b"");
    assert_eq!(
        text(&out.stdout),
        "from the host\nread-only\n321\n654\nok\n",
        "{out:?}\n{}",
        gw.log_text()
    );
    assert!(
        gw.log_text().contains("docker.execution.host.autoremove"),
        "one warning names the ignored key: {}",
        gw.log_text()
    );
    gw.assert_no_containers();
}

/// A real registry (Debian's docker-registry) that wants a password: starts on a free port,
/// holds the guest image under `team/guest:<port>`. Stops when dropped.
struct PrivateRegistry {
    child: std::process::Child,
    image: String,
    _dir: tempfile::TempDir,
}

impl PrivateRegistry {
    fn start(user: &str, password: &str) -> PrivateRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd (apache2-utils) runs");
        assert!(htpasswd.status.success());
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).expect("write");
        let config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: test\n    path: {root}/htpasswd\n",
            root = dir.path().display()
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("write");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (Debian's package) starts");
        let image = format!("127.0.0.1:{port}/team/guest:{port}");
        let registry = PrivateRegistry {
            child,
            image,
            _dir: dir,
        };
        wait_for_port("the registry", port, std::time::Duration::from_secs(20));
        // The push logs in with a throwaway client configuration, so the engine keeps no
        // credentials for the gateway's pull to borrow.
        let client = registry._dir.path().join("client");
        let docker = |args: &[&str], input: &str| {
            let mut cmd = Command::new("docker");
            cmd.env("DOCKER_CONFIG", &client).args(args);
            let out = run(cmd, input.as_bytes());
            assert!(out.status.success(), "docker {args:?}: {out:?}");
        };
        let server = format!("127.0.0.1:{port}");
        docker(&["tag", IMAGE, &registry.image], "");
        docker(
            &["login", "-u", user, "--password-stdin", &server],
            password,
        );
        docker(&["push", &registry.image], "");
        docker(&["rmi", &registry.image], "");
        registry
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "--force", &self.image])
            .output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `docker.execution.auth` (Docker's AuthConfig, as in ContainerSSH) pulls from a registry
/// that wants a password; a wrong password fails the login with the registry's reason, and
/// the password is never logged.
#[test]
fn docker_execution_auth_pulls_from_a_private_registry() {
    let registry = PrivateRegistry::start("robot", "s3cret-pa55");
    let wrong = Gateway::start(json!({"docker": {"execution": {
        "container": {"image": registry.image},
        "imagePullPolicy": "IfNotPresent",
        "auth": {"username": "robot", "password": "not-the-pa55"}
    }}}));
    let mut ssh = wrong.ssh();
    ssh.arg("true");
    let out = run(ssh, b"");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let log = wrong.log_text();
    assert!(log.contains("cannot pull image"), "{log}");
    assert!(!log.contains("not-the-pa55"), "{log}");
    drop(wrong);

    // Credentials that name another registry are not sent to this one.
    let elsewhere = Gateway::start(json!({"docker": {"execution": {
        "container": {"image": registry.image},
        "imagePullPolicy": "IfNotPresent",
        "auth": {"username": "robot", "password": "s3cret-pa55",
                 "serveraddress": "registry.example.com"}
    }}}));
    let mut ssh = elsewhere.ssh();
    ssh.arg("true");
    let out = run(ssh, b"");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let log = elsewhere.log_text();
    assert!(log.contains("names another registry"), "{log}");
    assert!(log.contains("cannot pull image"), "{log}");
    drop(elsewhere);

    let server = registry
        .image
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let gw = Gateway::start(json!({"docker": {"execution": {
        "container": {"image": registry.image},
        "imagePullPolicy": "IfNotPresent",
        "auth": {"username": "robot", "password": "s3cret-pa55", "serveraddress": server}
    }}}));
    let mut ssh = gw.ssh();
    ssh.arg("echo pulled");
    let out = run(ssh, b"");
    assert_eq!(text(&out.stdout), "pulled\n", "{out:?}\n{}", gw.log_text());
    let log = gw.log_text();
    assert!(log.contains("pulling image"), "{log}");
    assert!(!log.contains("s3cret-pa55"), "{log}");
    gw.assert_no_containers();
}

/// ContainerSSH's `network` (Docker's NetworkingConfig, Go's YAML spelling) connects the
/// container with an alias and a fixed address; `platform` picks the image's platform.
#[test]
fn network_and_platform_settings_reach_the_engine() {
    let name = format!("containerssh-test-net-{}", free_port());
    let created = Command::new("docker")
        .args(["network", "create", "--subnet", "10.231.77.0/24", &name])
        .output()
        .expect("docker network create");
    assert!(created.status.success(), "{created:?}");
    struct RemoveNetwork(String);
    impl Drop for RemoveNetwork {
        fn drop(&mut self) {
            let _ = Command::new("docker")
                .args(["network", "rm", &self.0])
                .output();
        }
    }
    let _network = RemoveNetwork(name.clone());
    let gw = Gateway::start(json!({"docker": {"execution": {
        "host": {"networkMode": name},
        "network": {"endpointsconfig": {name.clone(): {
            "aliases": ["team-shell"],
            "ipamconfig": {"ipv4address": "10.231.77.77"}
        }}},
        "platform": {"os": "linux", "architecture": "amd64"}
    }}}));
    let c = inspect_while_running(&gw);
    let endpoint = &c["NetworkSettings"]["Networks"][&name];
    assert_eq!(endpoint["IPAddress"], json!("10.231.77.77"), "{c}");
    assert!(
        endpoint["Aliases"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("team-shell"))),
        "{endpoint}"
    );
    // The fixed address is free again once that container is gone.
    gw.assert_no_containers();
    let mut ssh = gw.ssh();
    ssh.arg("grep -c 10.231.77.77 /etc/hosts");
    let out = run(ssh, b"");
    assert_eq!(text(&out.stdout), "1\n", "{out:?}\n{}", gw.log_text());
    assert!(
        !gw.log_text().contains("setting ignored"),
        "{}",
        gw.log_text()
    );
    gw.assert_no_containers();
}
