//! Direct start (`docker.connection.directStart`): the gateway's helper is the container's main
//! process and starts programs with the gateway's pipes; `docker exec` where it cannot.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

/// How long the directory and container changes may take.
const WAIT: Duration = Duration::from_secs(20);

/// Container directories under the instance's part of `runtime`.
fn slot_dirs(runtime: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for instance in std::fs::read_dir(runtime).into_iter().flatten().flatten() {
        for entry in std::fs::read_dir(instance.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                found.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    found
}

/// The helper is PID 1 of a hardened container (read-only root, user 1000, no capabilities,
/// no network), its directory is read-only inside, programs see the client's environment and
/// the container's, and the directory goes with the container.
#[test]
fn programs_start_directly_in_a_hardened_container() {
    let runtime = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(json!({"docker": {
        "connection": {"runtimeDir": runtime.path().join("run").to_string_lossy()},
        "execution": {
            "container": {"env": ["FROM_CONTAINER=yes"]},
            "host": {"readonlyRootfs": true, "tmpfs": {"/tmp": "rw,size=16m"}}
        }
    }}));
    gw.wait_for_log("start directly", Duration::from_secs(10));
    let mut ssh = gw.ssh();
    ssh.arg(
        "tr '\\0' ' ' < /proc/1/cmdline; echo; id -u; echo $FROM_AUTH $FROM_CONTAINER; \
         touch /.containerssh/x 2>/dev/null && echo writable || echo read-only; \
         echo to-stderr >&2; exit 7",
    );
    let out = run(ssh, b"");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}\n{}", gw.log_text());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "/.containerssh/helper spawner /.containerssh/spawner.sock ",
            "1000",
            "granted yes",
            "read-only"
        ],
        "{}",
        gw.log_text()
    );
    assert_eq!(text(&out.stderr), "to-stderr\n");

    // While a connection is open its container has a directory; afterwards it is gone.
    let mut held = gw.spawn_ssh("sleep 30", false);
    gw.wait_for_container();
    wait_until("a container directory", WAIT, || {
        slot_dirs(&runtime.path().join("run")).len() == 1
    });
    let _ = held.kill();
    let _ = held.wait();
    gw.assert_no_containers();
    wait_until("no container directory", WAIT, || {
        slot_dirs(&runtime.path().join("run")).is_empty()
    });
    assert!(!gw.log_text().contains("start with docker exec"));
    // Shutdown takes the instance's directory (and its copy of the helper) away.
    let mut gw = gw;
    assert!(gw.terminate().success());
    let left: Vec<_> = std::fs::read_dir(runtime.path().join("run"))
        .expect("runtime dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `directStart: off`: the idle command is the main process and programs are execs.
#[test]
fn direct_start_off_uses_docker_exec() {
    let gw = Gateway::start(json!({"docker": {"connection": {"directStart": "off"}}}));
    gw.wait_for_log("programs start with docker exec", Duration::from_secs(10));
    let mut ssh = gw.ssh();
    ssh.arg("tr '\\0' ' ' < /proc/1/cmdline; echo; printf 'b\\na\\n' | sort");
    let out = run(ssh, b"");
    assert!(out.status.success(), "{}", gw.log_text());
    assert_eq!(
        text(&out.stdout),
        "/bin/sh -c while :; do sleep 3600; done \na\nb\n"
    );
}

/// An entrypoint that does not run its arguments never starts the helper: that container's
/// programs fall back to `docker exec` (logged), and forwarding still finds the helper.
#[test]
fn an_entrypoint_that_ignores_its_arguments_falls_back_to_docker_exec() {
    let gw = Gateway::start(json!({"docker": {"execution": {"container": {
        "entrypoint": ["/bin/sh", "-c", "while :; do sleep 3600; done"]
    }}}}));
    let mut ssh = gw.ssh();
    ssh.arg("printf 'b\\na\\n' | sort; exit 4");
    let out = run(ssh, b"");
    assert_eq!(out.status.code(), Some(4), "{}", gw.log_text());
    assert_eq!(text(&out.stdout), "a\nb\n");
    assert!(
        gw.log_text().contains("start with docker exec"),
        "{}",
        gw.log_text()
    );
}

/// A gateway killed outright: each helper sees its end close and stops its container; the
/// next start of the same instance removes the containers and their directories.
#[test]
fn a_killed_gateway_stops_its_containers_and_the_next_start_clears_them() {
    let runtime = tempfile::tempdir().expect("tempdir");
    let run_dir = runtime.path().join("run");
    let instance = format!("direct-start-{}", free_port());
    let overrides = json!({
        "instanceId": instance,
        "docker": {"connection": {"runtimeDir": run_dir.to_string_lossy()}}
    });
    let mut first = Gateway::start(overrides.clone());
    let mut held = first.spawn_ssh("sleep 60", false);
    let mine = format!("label=containerssh.instance={instance}");
    let mut ids = Vec::new();
    wait_until("a container", WAIT, || {
        ids = docker_ids(&["ps", "-aq", "--filter", &mine]);
        !ids.is_empty()
    });
    let id = ids[0].clone();
    wait_until("a container directory", WAIT, || {
        slot_dirs(&run_dir).len() == 1
    });
    signal(first.pid(), "KILL");
    assert!(first.wait_exit(Duration::from_secs(10)).is_some());
    let _ = held.kill();
    let _ = held.wait();
    wait_until("the container stops by itself", WAIT, || {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Running}}", &id])
            .output()
            .expect("docker inspect");
        text(&out.stdout).trim() == "false"
    });
    assert_eq!(slot_dirs(&run_dir).len(), 1, "left for the next start");

    let second = Gateway::start(overrides);
    wait_until("the orphan removed", WAIT, || {
        docker_ids(&["ps", "-aq", "--filter", &format!("id={id}")]).is_empty()
    });
    wait_until("its directory removed", WAIT, || {
        slot_dirs(&run_dir).is_empty()
    });
    let mut ssh = second.ssh();
    ssh.arg("echo fine");
    let out = run(ssh, b"");
    assert_eq!(text(&out.stdout), "fine\n", "{}", second.log_text());
}
