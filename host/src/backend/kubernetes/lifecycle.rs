//! A pod's life as the gateway sees it: created, running (or failed to start, with the reason
//! Kubernetes gives), deleted and gone. Waiting uses watches, not polling.
use std::time::Duration;

use anyhow::{bail, Context};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ContainerState, Pod};
use kube::api::{Api, DeleteParams, ListParams, WatchEvent, WatchParams};

use super::throttle::Throttle;

/// Waiting reasons after which a container will not start without someone changing something.
const FATAL_WAITING_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

/// Where a starting pod stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartState {
    /// Not there yet; the text says what it waits for.
    Pending(String),
    Running,
    Failed(String),
}

/// Reads a pod's status: running once its console container runs, failed as soon as Kubernetes
/// says it cannot start.
pub fn start_state(pod: &Pod, console: &str) -> StartState {
    let Some(status) = &pod.status else {
        return StartState::Pending("no status yet".into());
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    if matches!(phase, "Failed" | "Succeeded") {
        let why = [status.reason.as_deref(), status.message.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        return StartState::Failed(format!("pod {}{}", phase.to_lowercase(), suffix(&why)));
    }
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for c in containers {
        let is_console = c.name == console;
        match c.state.as_ref().and_then(fatal_or_exit) {
            Some(problem) if is_console || problem.fatal => {
                return StartState::Failed(format!("container {}: {}", c.name, problem.text));
            }
            _ => {}
        }
        if is_console && phase == "Running" && c.state.as_ref().is_some_and(|s| s.running.is_some())
        {
            return StartState::Running;
        }
    }
    let unschedulable = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    match unschedulable {
        Some(c) => StartState::Pending(format!(
            "not scheduled{}",
            suffix(c.message.as_deref().unwrap_or_default())
        )),
        None => StartState::Pending(format!("phase {phase}")),
    }
}

struct Problem {
    text: String,
    /// Failed for good (an init container that exits 0 is normal, a pull error is not).
    fatal: bool,
}

fn fatal_or_exit(state: &ContainerState) -> Option<Problem> {
    if let Some(w) = &state.waiting {
        let reason = w.reason.as_deref().unwrap_or_default();
        if FATAL_WAITING_REASONS.contains(&reason) {
            return Some(Problem {
                text: format!(
                    "{reason}{}",
                    suffix(w.message.as_deref().unwrap_or_default())
                ),
                fatal: true,
            });
        }
    }
    state.terminated.as_ref().map(|t| Problem {
        text: format!(
            "exited with code {}{}",
            t.exit_code,
            suffix(
                &[t.reason.as_deref(), t.message.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": ")
            )
        ),
        fatal: t.exit_code != 0,
    })
}

fn suffix(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({text})")
    }
}

/// Watches one pod from `resource_version` until `done` returns something, re-watching when
/// the server ends a watch and re-reading the pod when the version is too old. `None` from
/// the watch means the pod was deleted.
pub async fn watch_pod<T>(
    api: &Api<Pod>,
    throttle: &Throttle,
    name: &str,
    mut resource_version: String,
    mut done: impl FnMut(Option<&Pod>) -> Option<T>,
) -> anyhow::Result<T> {
    let params = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(290);
    loop {
        throttle.acquire().await;
        let mut events = api
            .watch(&params, &resource_version)
            .await
            .with_context(|| format!("cannot watch pod {name}"))?
            .boxed();
        while let Some(event) = events.try_next().await.context("watching the pod")? {
            match event {
                WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                    if let Some(v) = &pod.metadata.resource_version {
                        resource_version.clone_from(v);
                    }
                    if let Some(result) = done(Some(&pod)) {
                        return Ok(result);
                    }
                }
                WatchEvent::Deleted(_) => {
                    if let Some(result) = done(None) {
                        return Ok(result);
                    }
                    bail!("pod {name} was deleted");
                }
                WatchEvent::Bookmark(b) => resource_version = b.metadata.resource_version,
                WatchEvent::Error(e) if e.code == 410 => {
                    // Too old: start again from the pod as it is now.
                    throttle.acquire().await;
                    match api.get_opt(name).await.context("cannot read the pod")? {
                        Some(pod) => {
                            resource_version =
                                pod.metadata.resource_version.clone().unwrap_or_default();
                            if let Some(result) = done(Some(&pod)) {
                                return Ok(result);
                            }
                        }
                        None => {
                            if let Some(result) = done(None) {
                                return Ok(result);
                            }
                            bail!("pod {name} was deleted");
                        }
                    }
                    break;
                }
                WatchEvent::Error(e) => bail!("watching pod {name}: {} ({})", e.message, e.code),
            }
        }
    }
}

/// Waits until the pod runs; fails with Kubernetes' reason when it cannot start.
pub async fn wait_running(
    api: &Api<Pod>,
    throttle: &Throttle,
    created: &Pod,
    console: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let name = created.metadata.name.clone().unwrap_or_default();
    let version = created
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    match start_state(created, console) {
        StartState::Running => return Ok(()),
        StartState::Failed(why) => bail!("{why}"),
        StartState::Pending(_) => {}
    }
    // What the pod was waiting for when last seen, for the timeout's message.
    let mut last = String::from("created");
    let waited = tokio::time::timeout(
        timeout,
        watch_pod(api, throttle, &name, version, |pod| {
            match pod.map(|p| start_state(p, console)) {
                Some(StartState::Running) => Some(Ok(())),
                Some(StartState::Failed(why)) => Some(Err(anyhow::anyhow!("{why}"))),
                Some(StartState::Pending(why)) => {
                    last = why;
                    None
                }
                None => Some(Err(anyhow::anyhow!("the pod was deleted while starting"))),
            }
        }),
    )
    .await;
    match waited {
        Ok(result) => result?,
        Err(_) => bail!(
            "pod did not start within {timeout:?} (kubernetes.timeouts.podStart); it was {last}"
        ),
    }
}

/// After shutdown began: how long a deletion still waits for the pod's graceful end.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(3);

/// Deletes a pod and waits until it is gone; if it lingers past `timeout` (or, once `hurry` is
/// cancelled at shutdown, past `SHUTDOWN_PATIENCE`), deletes it without a grace period. True
/// when the pod is gone.
pub async fn delete_and_wait(
    api: &Api<Pod>,
    throttle: &Throttle,
    name: &str,
    http_timeout: Duration,
    timeout: Duration,
    hurry: &tokio_util::sync::CancellationToken,
    connection_id: &str,
) -> anyhow::Result<bool> {
    throttle.acquire().await;
    let deleted = tokio::time::timeout(http_timeout, api.delete(name, &DeleteParams::background()))
        .await
        .context("deleting the pod timed out")?;
    let pod = match deleted {
        Ok(either) => match either.left() {
            Some(pod) => pod,
            None => return Ok(true),
        },
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(true),
        Err(e) => return Err(e).with_context(|| format!("cannot delete pod {name}")),
    };
    let version = pod.metadata.resource_version.clone().unwrap_or_default();
    let gone = watch_pod(api, throttle, name, version, |pod| {
        pod.is_none().then_some(())
    });
    let patience = async {
        tokio::select! {
            () = tokio::time::sleep(timeout) => {}
            () = async {
                hurry.cancelled().await;
                tokio::time::sleep(SHUTDOWN_PATIENCE).await;
            } => {}
        }
    };
    let gone = tokio::select! {
        result = gone => Some(result),
        () = patience => None,
    };
    match gone {
        Some(result) => result.map(|_| true),
        None => {
            tracing::warn!(
                connection_id,
                pod = name,
                "pod still terminating; deleting it without grace period"
            );
            throttle.acquire().await;
            match api
                .delete(name, &DeleteParams::default().grace_period(0))
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(true),
                Err(e) => Err(e).with_context(|| format!("cannot force-delete pod {name}")),
            }
        }
    }
}

/// Names of pods carrying `selector` in the API's namespace.
pub async fn list_names(
    api: &Api<Pod>,
    throttle: &Throttle,
    selector: &str,
    http_timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    throttle.acquire().await;
    let list = tokio::time::timeout(
        http_timeout,
        api.list(&ListParams::default().labels(selector)),
    )
    .await
    .context("listing pods timed out")?
    .context("cannot list pods")?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
        PodCondition, PodStatus,
    };

    fn pod(phase: &str, statuses: Vec<ContainerStatus>) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(statuses),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn status(name: &str, state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(state),
            ..Default::default()
        }
    }

    fn waiting(reason: &str) -> ContainerState {
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message: Some("details".into()),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn running_console_container_means_running() {
        let running = ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        };
        assert_eq!(
            start_state(
                &pod("Running", vec![status("shell", running.clone())]),
                "shell"
            ),
            StartState::Running
        );
        assert!(matches!(
            start_state(&pod("Pending", vec![status("shell", running)]), "shell"),
            StartState::Pending(_)
        ));
    }

    #[test]
    fn image_problems_fail_at_once_with_the_reason() {
        let state = start_state(
            &pod(
                "Pending",
                vec![status("shell", waiting("ErrImageNeverPull"))],
            ),
            "shell",
        );
        assert_eq!(
            state,
            StartState::Failed("container shell: ErrImageNeverPull (details)".into())
        );
        // Pulling is still going on: wait.
        assert!(matches!(
            start_state(
                &pod(
                    "Pending",
                    vec![status("shell", waiting("ContainerCreating"))]
                ),
                "shell"
            ),
            StartState::Pending(_)
        ));
    }

    #[test]
    fn exited_console_or_failed_pod_is_a_failure() {
        let exited = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 0,
                reason: Some("Completed".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            start_state(
                &pod("Running", vec![status("shell", exited.clone())]),
                "shell"
            ),
            StartState::Failed("container shell: exited with code 0 (Completed)".into())
        );
        // A sidecar that completed is not the console's problem.
        assert!(matches!(
            start_state(&pod("Running", vec![status("side", exited)]), "shell"),
            StartState::Pending(_)
        ));
        let mut failed = pod("Failed", vec![]);
        if let Some(s) = failed.status.as_mut() {
            s.reason = Some("Evicted".into());
        }
        assert_eq!(
            start_state(&failed, "shell"),
            StartState::Failed("pod failed (Evicted)".into())
        );
    }

    #[test]
    fn unschedulable_pods_say_why_they_wait() {
        let mut p = pod("Pending", vec![]);
        if let Some(s) = p.status.as_mut() {
            s.conditions = Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                message: Some("0/1 nodes are available".into()),
                ..Default::default()
            }]);
        }
        assert_eq!(
            start_state(&p, "shell"),
            StartState::Pending("not scheduled (0/1 nodes are available)".into())
        );
    }
}
