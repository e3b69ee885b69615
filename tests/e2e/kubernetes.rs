//! The Kubernetes backend against a real cluster: Kubernetes v1.20.2 (kube-apiserver with TLS,
//! token authentication and RBAC, controller-manager, scheduler, a kubelet running pods through
//! dockershim), built from Debian's source and started by `tests/k8s/cluster.sh`. The gateway
//! authenticates as the service account of `examples/kubernetes/rbac.yaml`, which may only
//! touch pods and pods/exec in one namespace.
//!
//! 1.20 has no v5 WebSocket exec protocol, so programs run over SPDY/3.1 there (as with
//! `kubectl exec`), with an exact end of input and exit status; the v5 WebSocket path is tested
//! against a local server in `host/tests/kubernetes_v5.rs`.
//!
//! What every backend must do is in the conformance suite (`conformance.rs`); this file has
//! what is the Kubernetes backend's own (pod hardening, labels, RBAC, the exec protocols,
//! pools, reaping).
//!
//! These tests need `CONTAINERSSH_K8S_ENV` (the cluster's env file; `tests/run.sh` sets it).
//! Without it they print that they were skipped and pass.
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use containerssh::backend::kubernetes::exec::{self, ExecProtocol, Protocol, Target};
use containerssh::backend::{ExitReason, Output};
use futures::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::harness::*;

pub struct Cluster {
    api: String,
    ca: String,
    token_file: String,
    namespace: String,
    image: String,
    kubeconfig: String,
}

pub fn cluster() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let path = std::env::var("CONTAINERSSH_K8S_ENV").ok()?;
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("CONTAINERSSH_K8S_ENV={path}: {e}"));
            let get = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("{key}=")))
                    .unwrap_or_else(|| panic!("{path} has no {key}"))
                    .to_string()
            };
            Some(Cluster {
                api: get("K8S_API"),
                ca: get("K8S_CA"),
                token_file: get("K8S_TOKEN_FILE"),
                namespace: get("K8S_NAMESPACE"),
                image: get("K8S_IMAGE"),
                kubeconfig: get("K8S_KUBECONFIG"),
            })
        })
        .as_ref()
}

macro_rules! cluster_or_skip {
    () => {
        match cluster() {
            Some(c) => c,
            None => {
                eprintln!(
                    "skipped: CONTAINERSSH_K8S_ENV is not set (tests/run.sh starts a cluster)"
                );
                return;
            }
        }
    };
}

/// The backend settings of every test: the restricted token, the test image, and
/// `hostNetwork` (the test kubelet's engine has no bridge network; pods without an IP would be
/// recreated by the 1.20 kubelet).
pub fn kubernetes(c: &Cluster, pod_extra: Value) -> Value {
    let mut pod = json!({
        "metadata": {"namespace": c.namespace},
        "spec": {
            "hostNetwork": true,
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000},
            "containers": [{"name": "shell", "image": c.image, "imagePullPolicy": "Never"}]
        }
    });
    merge(&mut pod, pod_extra);
    json!({
        "backend": "kubernetes",
        "kubernetes": {
            "connection": {"host": c.api, "cacertFile": c.ca, "bearerTokenFile": c.token_file},
            "pod": pod,
            "timeouts": {"podStart": "90s", "podStop": "60s"}
        }
    })
}

fn kubectl(c: &Cluster, args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .arg(format!("--kubeconfig={}", c.kubeconfig))
        .args(["-n", &c.namespace])
        .args(args)
        .output()
        .expect("kubectl runs")
}

/// The `containerssh.instance` label of a gateway (its instance id made a label value).
fn instance_label(gw: &Gateway) -> String {
    gw.instance().replace(':', "-")
}

pub fn pods(c: &Cluster, gw: &Gateway) -> Vec<String> {
    let selector = format!("containerssh.instance={}", instance_label(gw));
    let out = kubectl(c, &["get", "pods", "-l", &selector, "-o", "name"]);
    assert!(out.status.success(), "{out:?}");
    text(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches("pod/").to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

pub fn wait_for_pod(c: &Cluster, gw: &Gateway) -> String {
    let start = Instant::now();
    loop {
        if let Some(p) = pods(c, gw).into_iter().next() {
            return p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no pod appeared:\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Pods are gone only once the kubelet confirmed their end, which takes a few seconds.
pub fn assert_no_pods(c: &Cluster, gw: &Gateway) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(90) {
        if pods(c, gw).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("pods leaked: {:?}\n{}", pods(c, gw), gw.log_text());
}

#[test]
fn exec_runs_in_a_hardened_pod_with_environment_stderr_and_exit_status() {
    let c = cluster_or_skip!();
    // Resources come from the spec as written.
    let gw = Gateway::start(kubernetes(
        c,
        json!({"spec": {"containers": [{"name": "shell", "image": c.image,
            "imagePullPolicy": "Never", "resources": {"limits": {"memory": "64Mi"}}}]}}),
    ));
    let mut ssh = gw.ssh();
    ssh.args([
        "-o",
        "SetEnv=GREETING=hello",
        "echo $GREETING $FROM_AUTH; id -u; echo to-stderr >&2; \
         grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; \
         ls /var/run/secrets/kubernetes.io 2>&1 | grep -c 'No such file'; \
         cat /sys/fs/cgroup/memory/memory.limit_in_bytes; exit 3",
    ]);
    let out = run(ssh, b"");
    assert_eq!(out.status.code(), Some(3), "{out:?}\n{}", gw.log_text());
    assert_eq!(
        text(&out.stdout),
        "hello granted\n1000\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\n1\n67108864\n"
    );
    assert_eq!(text(&out.stderr), "to-stderr\n");
    assert_no_pods(c, &gw);
    let log = gw.log_text();
    assert!(log.contains("pod removed"), "{log}");
    // A 1.20 API server is known to lack v5: SPDY from the first exec on.
    assert!(log.contains("SPDY/3.1"), "{log}");
}

#[test]
fn pods_carry_labels_and_secure_defaults_and_go_when_the_client_vanishes() {
    let c = cluster_or_skip!();
    let gw = Gateway::start(kubernetes(
        c,
        json!({"metadata": {"labels": {"app": "ssh-gateway"}}}),
    ));
    let mut child = gw.spawn_ssh("sleep 300", false);
    let name = wait_for_pod(c, &gw);
    let out = kubectl(c, &["get", "pod", &name, "-o", "json"]);
    let pod: Value = serde_json::from_slice(&out.stdout).expect("pod JSON");
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["containerssh.managed"], "true");
    assert_eq!(labels["app"], "ssh-gateway");
    assert_eq!(
        labels["containerssh.connection-id"].as_str().map(str::len),
        Some(32)
    );
    assert_eq!(
        pod["metadata"]["annotations"]["containerssh.username"],
        USER
    );
    let spec = &pod["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["enableServiceLinks"], false);
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &spec["containers"][0]["securityContext"];
    assert_eq!(container["allowPrivilegeEscalation"], false);
    assert_eq!(container["runAsNonRoot"], true);
    assert_eq!(container["capabilities"]["drop"], json!(["ALL"]));
    // SIGKILL: the client sends nothing more, the TCP connection just closes.
    child.kill().expect("kill ssh");
    let _ = child.wait();
    assert_no_pods(c, &gw);
}

/// 64 MiB up into `sha256sum` (which answers only after end of input), and 64 MiB up and back
/// down through `cat` at the same time: every byte, in order.
#[test]
fn large_streams_pass_whole_through_the_pod() {
    let c = cluster_or_skip!();
    let gw = Gateway::start(kubernetes(c, json!({})));
    let data: Vec<u8> = (0..64usize << 20)
        .map(|i| (i.wrapping_mul(7919) % 251) as u8)
        .collect();
    let expected = hex::encode(Sha256::digest(&data));
    let mut ssh = gw.ssh();
    ssh.arg("sha256sum");
    let started = Instant::now();
    let out = run(ssh, &data);
    let up = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{out:?}\n{}", gw.log_text());
    assert_eq!(
        text(&out.stdout).split_whitespace().next(),
        Some(expected.as_str())
    );
    let mut ssh = gw.ssh();
    ssh.arg("cat");
    let started = Instant::now();
    let out = run(ssh, &data);
    let both = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", gw.log_text());
    assert_eq!(out.stdout.len(), data.len());
    assert_eq!(hex::encode(Sha256::digest(&out.stdout)), expected);
    eprintln!("64 MiB: up into sha256sum {up:?}, up and back through cat {both:?}");
    assert_no_pods(c, &gw);
}

/// 1 GiB of pseudo-random data through `cat` in the pod and back, both directions at once,
/// SHA-256 compared (the Docker backend's tests do the same).
#[test]
fn a_gigabyte_round_trips_through_cat_in_a_pod() {
    let c = cluster_or_skip!();
    let gw = Gateway::start(kubernetes(c, json!({})));
    crate::flow::round_trip_through_cat(gw.ssh(), crate::flow::GIB);
    assert_no_pods(c, &gw);
}

/// A client of its own for the backend's exec, with the gateway's rights.
fn api_client(c: &Cluster) -> kube::Client {
    use rustls::pki_types::pem::PemObject;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = kube::Config::new(c.api.parse().expect("K8S_API is a URL"));
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(&c.ca)
        .expect("CA file")
        .map(|cert| cert.expect("PEM").to_vec())
        .collect();
    config.root_cert = Some(certs);
    config.auth_info.token_file = Some(c.token_file.clone());
    kube::Client::try_from(config).expect("client")
}

/// What the gateway does before it knows the server (1.30 or later, or a version that says
/// nothing): it asks for v5 alone. The 1.20 API server refuses that before the program runs,
/// and the exec is made again over SPDY: the program runs once, reads its input to the end,
/// and its exit status arrives.
#[tokio::test]
async fn a_refused_v5_request_runs_nothing_and_spdy_takes_over() {
    let c = cluster_or_skip!();
    let gw = Gateway::start(kubernetes(c, json!({})));
    let mut session = gw.spawn_ssh("sleep 300", false);
    let pod = wait_for_pod(c, &gw);
    let ready = kubectl(
        c,
        &[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "--timeout=90s",
        ],
    );
    assert!(ready.status.success(), "{ready:?}");
    let target = Target {
        client: api_client(c),
        protocol: ExecProtocol::default(),
        connection_id: "probe".into(),
        namespace: c.namespace.clone(),
        pod,
        container: "shell".into(),
    };
    let argv = ["/bin/sh", "-c", "echo ran >> /tmp/probe; sort; exit 5"].map(String::from);
    let mut stream = exec::open(&target, &argv, true, None).await.expect("exec");
    assert_eq!(stream.protocol, Protocol::Spdy);
    assert_eq!(target.protocol.known(), Some(Protocol::Spdy));
    stream.stdin.write_all(b"pear\napple\n").await.unwrap();
    stream.stdin.shutdown().await.unwrap();
    let mut printed = Vec::new();
    while let Some(item) = stream.output.next().await {
        match item.expect("output") {
            Output::Stdout(b) | Output::Stderr(b) => printed.extend_from_slice(&b),
        }
    }
    assert_eq!(text(&printed), "apple\npear\n");
    assert_eq!(
        exec::wait_exit(&mut stream.exit).await.expect("exit"),
        ExitReason::Status(5)
    );
    let argv = ["cat", "/tmp/probe"].map(String::from);
    let (exit, printed) = exec::run(&target, &argv).await.expect("helper");
    assert_eq!((exit, printed.as_str()), (ExitReason::Status(0), "ran\n"));
    let _ = session.kill();
    let _ = session.wait();
    assert_no_pods(c, &gw);
}

#[test]
fn a_pod_that_cannot_start_is_deleted_and_the_client_told() {
    let c = cluster_or_skip!();
    let gw = Gateway::start(kubernetes(
        c,
        json!({"spec": {"containers": [{"name": "shell", "image": "containerssh-test/absent:1", "imagePullPolicy": "Never"}]}}),
    ));
    let mut ssh = gw.ssh();
    ssh.arg("echo should-not-run");
    let started = Instant::now();
    let out = run(ssh, b"");
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text(&out.stderr).contains("could not be started"),
        "{}",
        text(&out.stderr)
    );
    // Kubernetes says at once that the image is missing; the gateway does not wait out podStart.
    assert!(started.elapsed() < Duration::from_secs(60));
    let log = gw.log_text();
    assert!(log.contains("ErrImageNeverPull"), "{log}");
    assert_no_pods(c, &gw);
}

#[test]
fn orphaned_pods_of_an_earlier_run_are_reaped_at_start() {
    let c = cluster_or_skip!();
    let gw = Gateway::start_with(
        |port, _| {
            let host = hostname::get().unwrap().to_string_lossy().into_owned();
            let orphan = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("orphan-{port}"), "labels": {
                    "containerssh.managed": "true",
                    "containerssh.instance": format!("{host}_127.0.0.1-{port}")
                }},
                "spec": {"hostNetwork": true, "containers": [{
                    "name": "idle", "image": c.image, "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
                }]}
            });
            let mut apply = Command::new("kubectl");
            apply.arg(format!("--kubeconfig={}", c.kubeconfig)).args([
                "-n",
                &c.namespace,
                "apply",
                "-f",
                "-",
            ]);
            let out = run(apply, orphan.to_string().as_bytes());
            assert!(out.status.success(), "{out:?}");
        },
        kubernetes(c, json!({})),
    );
    gw.wait_for_log("removed orphaned pod", Duration::from_secs(90));
    assert_no_pods(c, &gw);
}

#[test]
fn without_rights_in_the_namespace_the_login_is_refused_with_the_reason() {
    let c = cluster_or_skip!();
    // The gateway's service account may create pods only in the session namespace.
    let gw = Gateway::start(kubernetes(c, json!({"metadata": {"namespace": "default"}})));
    let mut ssh = gw.ssh();
    ssh.arg("true");
    let out = run(ssh, b"");
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text(&out.stderr).contains("could not be started"),
        "{out:?}"
    );
    let log = gw.log_text();
    assert!(log.contains("forbidden"), "{log}");
}

#[test]
fn granted_files_and_auth_metadata_reach_the_pod() {
    let c = cluster_or_skip!();
    let (_auth, gw) = crate::webhook::gateway_with_auth_server(
        json!({}),
        kubernetes(
            c,
            json!({
                "exposeAuthMetadataAsEnv": {"team": "TEAM"},
                "exposeAuthMetadataAsLabels": {"team": "team"},
                "exposeAuthMetadataAsAnnotations": {"team": "example.com/team"}
            }),
        ),
    );
    let mut ssh = gw.ssh_password(USER, PASSWORD);
    ssh.arg(
        "echo $TEAM $FROM_WEBHOOK; cat /tmp/granted.txt; stat -c '%u %a' /tmp/granted.txt; sleep 2",
    );
    let child = ssh
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh");
    let name = wait_for_pod(c, &gw);
    let out = kubectl(c, &["get", "pod", &name, "-o", "json"]);
    let pod: Value = serde_json::from_slice(&out.stdout).expect("pod JSON");
    assert_eq!(pod["metadata"]["labels"]["team"], "blue");
    assert_eq!(pod["metadata"]["annotations"]["example.com/team"], "blue");
    let out = child.wait_with_output().expect("ssh ends");
    assert_eq!(
        text(&out.stdout),
        "blue yes\ngranted-file\n1000 600\n",
        "{out:?}\n{}",
        gw.log_text()
    );
    assert_no_pods(c, &gw);
}

#[test]
fn sigterm_deletes_every_pod_before_the_gateway_exits() {
    let c = cluster_or_skip!();
    let mut config = kubernetes(c, json!({}));
    merge(&mut config, json!({"ssh": {"shutdownTimeout": "2s"}}));
    let mut gw = Gateway::start(config);
    let mut child = gw.spawn_ssh("sleep 300", false);
    wait_for_pod(c, &gw);
    let status = gw.terminate();
    assert!(status.success(), "{status:?}\n{}", gw.log_text());
    // Deletion was waited for: nothing is left the moment the gateway has exited.
    assert!(pods(c, &gw).is_empty(), "{:?}", pods(c, &gw));
    assert!(
        gw.log_text().contains("no containers left"),
        "{}",
        gw.log_text()
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// The example's manifests as the API server sees them (server-side dry run; rbac.yaml itself
/// is applied by the cluster script and its rights are what every test here runs with).
#[test]
fn the_example_manifests_are_accepted_by_the_api_server() {
    let c = cluster_or_skip!();
    let examples = workspace().join("examples/kubernetes");
    let out = Command::new("kubectl")
        .arg(format!("--kubeconfig={}", c.kubeconfig))
        .args(["apply", "--dry-run=server", "-f"])
        .arg(examples.join("gateway.yaml"))
        .arg("-f")
        .arg(examples.join("rbac.yaml"))
        .output()
        .expect("kubectl runs");
    assert!(out.status.success(), "{out:?}");
    let said = text(&out.stdout);
    assert!(said.contains("statefulset.apps/containerssh"), "{said}");
    assert!(
        said.contains("networkpolicy.networking.k8s.io/no-traffic"),
        "{said}"
    );
}

/// `kubernetes.pod.pool`: a login takes a running pod, which is relabelled for its connection;
/// the next login gets another pod; SIGTERM leaves none of them.
#[test]
fn a_warm_pool_serves_logins_with_relabelled_pods_and_leaves_none() {
    let c = cluster_or_skip!();
    let mut config = kubernetes(c, json!({"pool": {"size": 1}}));
    merge(&mut config, json!({"ssh": {"shutdownTimeout": "2s"}}));
    let mut gw = Gateway::start(config);
    gw.wait_for_log("warm pool full", Duration::from_secs(120));
    let pooled = pods(c, &gw);
    assert_eq!(pooled.len(), 1, "{pooled:?}");

    // The pod's host name is its name: the login runs in the pooled pod.
    let mut child = gw.spawn_ssh("hostname; sleep 30", true);
    gw.wait_for_log("pod taken from the warm pool", Duration::from_secs(30));
    let log = gw.log_text();
    let connection = log
        .lines()
        .find(|l| l.contains("pod taken from the warm pool"))
        .and_then(|l| l.split("connection_id=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the log names the connection")
        .to_string();
    let out = kubectl(
        c,
        &[
            "get",
            "pod",
            &pooled[0],
            "-o",
            r"jsonpath={.metadata.labels.containerssh\.connection-id}",
        ],
    );
    assert_eq!(text(&out.stdout), connection, "{out:?}");
    let _ = child.kill();
    let _ = child.wait();

    // A second login gets a pod of its own (the refilled one), never the first again.
    let mut ssh = gw.ssh();
    ssh.arg("hostname");
    let out = run(ssh, b"");
    assert!(out.status.success(), "{out:?}\n{}", gw.log_text());
    assert_ne!(text(&out.stdout).trim(), pooled[0]);

    let status = gw.terminate();
    assert!(status.success(), "{status:?}\n{}", gw.log_text());
    // Every pod's deletion was requested before the gateway exited; on a loaded node the
    // kubelet may take a while longer to finish it.
    assert!(
        !gw.log_text().contains("cannot delete pod"),
        "{}",
        gw.log_text()
    );
    let started = std::time::Instant::now();
    while !pods(c, &gw).is_empty() && started.elapsed() < Duration::from_secs(90) {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(pods(c, &gw).is_empty(), "{:?}", pods(c, &gw));
}

/// A config server built with ContainerSSH's Go library answers the whole AppConfig at zero
/// values plus a pod of its own: with the default merge the pod runs, the rest is the file's.
#[test]
fn a_zero_filled_go_answer_picks_the_pod() {
    use crate::webhook_server::{Answer, ClientAuth, Handler, WebhookServer};
    let c = cluster_or_skip!();
    let (_dir, pki) = crate::webhook::test_pki();
    let fixture = workspace().join("tests/fixtures/go-zero-appconfig.json");
    let zero: Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let image = c.image.clone();
    let handler: Handler = std::sync::Arc::new(move |_, _| {
        let mut config = zero.clone();
        config["backend"] = json!("kubernetes");
        config["kubernetes"]["pod"]["spec"]["containers"] = json!([{
            "name": "shell", "image": image, "imagePullPolicy": "Never",
            "env": [{"name": "FROM_GO_SERVER", "value": "pod-from-answer"}]
        }]);
        Answer::ok(json!({"config": config}))
    });
    let server = WebhookServer::start(&pki, ClientAuth::Required, handler);
    let mut config = kubernetes(c, json!({}));
    merge(
        &mut config,
        json!({"configserver": {
            "url": format!("{}/config", server.url),
            "cacert": pki.ca_cert, "cert": pki.client_cert, "key": pki.client_key
        }}),
    );
    let gw = Gateway::start(config);
    // The file's pod settings (hostNetwork, uid 1000) stay; the answer's container runs.
    assert_password_run(
        &gw,
        USER,
        PASSWORD,
        "echo $FROM_GO_SERVER; id -u",
        "pod-from-answer\n1000\n",
    );
    assert_eq!(server.requests().len(), 1);
    assert_no_pods(c, &gw);
}
