//! Waiting for the cluster to reach a state, for tests: polling under a
//! deadline, with a timeout message that says what was awaited and what was
//! last seen instead.
//!
//! [`until`] and [`until_some`] poll any check; the rest are the waits real
//! cases keep needing: pods bound (by name, name prefix or label, so pods
//! made with `generateName` or by a controller are found too), pods that must
//! stay pending for a while, an event about a pod, a pod told why it is not
//! scheduled (`PodScheduled=False` matching its event), CRDs established, a
//! namespace ready for pods. Scheduling waits read better on failure with the
//! schedulers' logs: `.with_logs(&plane)` ([`WithLogs`]) appends them.
//!
//! ```no_run
//! # async fn f(plane: &phalanx_e2e::ControlPlane, pods: &kube::Api<k8s_openapi::api::core::v1::Pod>) -> anyhow::Result<()> {
//! use std::time::Duration;
//! use phalanx_e2e::wait::{stays_pending, wait_selected_bound, WithLogs};
//! use phalanx_e2e::PodSelector;
//! let bound = wait_selected_bound(pods, &PodSelector::name_prefix("trainer-"), 4, Duration::from_secs(60))
//!     .await
//!     .with_logs(plane)?;
//! stays_pending(pods, &PodSelector::labels("app=too-big"), Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;

use crate::cluster::ControlPlane;
use crate::error::HarnessError;
use crate::events::{pod_events, PodEvent};
use crate::pods::{is_terminating, name_of, node_of, PodSelector};

/// Pause between two looks at the cluster.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Polls `check` every [`POLL_INTERVAL`] until it yields `Ok(value)`; an
/// `Err(why)` means "not yet, because why". After `timeout` it fails with
/// `what` and the last `why`. An error of the check itself ends the wait.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Result<T, String>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await? {
            Ok(value) => return Ok(value),
            Err(why) if Instant::now() >= deadline => {
                return Err(HarnessError::Timeout {
                    what: format!("{what}: {why}"),
                    timeout,
                }
                .into())
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// [`until`] for a check that has no reason to give: `None` is "not yet".
pub async fn until_some<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    until(what, timeout, || {
        let next = probe();
        async move { Ok(next.await?.ok_or_else(|| "not yet".to_owned())) }
    })
    .await
}

/// Waits until every pod in `names` exists and is bound to a node; returns
/// them.
pub async fn wait_bound(
    api: &Api<Pod>,
    names: &[String],
    timeout: Duration,
) -> anyhow::Result<Vec<Pod>> {
    wait_selected_bound(api, &PodSelector::names(names), names.len(), timeout).await
}

/// Waits until the pod `name` is bound to a node; returns it.
pub async fn wait_pod_bound(api: &Api<Pod>, name: &str, timeout: Duration) -> anyhow::Result<Pod> {
    let mut pods = wait_bound(api, &[name.to_owned()], timeout).await?;
    pods.pop()
        .ok_or_else(|| anyhow::anyhow!("pod {name} vanished"))
}

/// Waits until exactly `count` selected pods exist (not counting pods being
/// deleted) and all of them are bound to a node; returns them.
pub async fn wait_selected_bound(
    api: &Api<Pod>,
    selector: &PodSelector,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Pod>> {
    let what = format!("{count} {selector} bound");
    until(&what, timeout, || async {
        let pods = live(selector.list(api).await?);
        let unbound: Vec<&str> = pods
            .iter()
            .filter(|p| node_of(p).is_none())
            .map(name_of)
            .collect();
        if pods.len() == count && unbound.is_empty() {
            return Ok(Ok(pods));
        }
        Ok(Err(format!(
            "{} exist, {} bound; unbound: {unbound:?}",
            pods.len(),
            pods.len() - unbound.len()
        )))
    })
    .await
}

/// Waits until at least `count` selected pods exist (not counting pods being
/// deleted), for pods a controller creates; returns all that do.
pub async fn wait_pods_exist(
    api: &Api<Pod>,
    selector: &PodSelector,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Pod>> {
    let what = format!("{count} {selector} created");
    until(&what, timeout, || async {
        let pods = live(selector.list(api).await?);
        Ok(if pods.len() >= count {
            Ok(pods)
        } else {
            Err(format!("{} exist", pods.len()))
        })
    })
    .await
}

/// Checks for the whole of `duration` that no selected pod is bound, failing
/// at the first one that is (naming it and its node). The selected pods must
/// exist: every named one, at least one for a prefix or label selector.
/// Returns them as last seen.
pub async fn stays_pending(
    api: &Api<Pod>,
    selector: &PodSelector,
    duration: Duration,
) -> anyhow::Result<Vec<Pod>> {
    let start = Instant::now();
    loop {
        let pods = live(selector.list(api).await?);
        let expected = selector.named_count().unwrap_or(1).max(1);
        if pods.len() < expected {
            anyhow::bail!(
                "{selector} should stay pending, but only {} of them exist",
                pods.len()
            );
        }
        if let Some(pod) = pods.iter().find(|p| node_of(p).is_some()) {
            anyhow::bail!(
                "{selector} should stay pending for {duration:?}, but {} was bound to {} after {:.1?}",
                name_of(pod),
                node_of(pod).unwrap_or_default(),
                start.elapsed()
            );
        }
        if start.elapsed() >= duration {
            return Ok(pods);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The pod's `PodScheduled` condition: (status, reason, message).
pub fn pod_scheduled(pod: &Pod) -> Option<(String, String, String)> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

/// Waits until the `PodScheduled` of pod `name` in `namespace` is False with
/// `reason` and a message that one of its FailedScheduling events carries word
/// for word (any message for `SchedulingGated`, which has no event); returns
/// the message.
pub async fn wait_not_scheduled(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    reason: &str,
) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    until(
        &format!("{name}: PodScheduled=False/{reason} with its event's message"),
        Duration::from_secs(60),
        || async {
            let pod = pods.get(name).await?;
            let Some((status, got, message)) = pod_scheduled(&pod) else {
                return Ok(Err("no PodScheduled condition".to_owned()));
            };
            if status != "False" || got != reason {
                return Ok(Err(format!("{status}/{got}: {message}")));
            }
            if reason == "SchedulingGated" {
                return Ok(Ok(message));
            }
            let notes: Vec<String> = pod_events(client, namespace)
                .await?
                .into_iter()
                .filter(|e| e.pod == name && e.reason == "FailedScheduling")
                .map(|e| e.note)
                .collect();
            Ok(if notes.contains(&message) {
                Ok(message)
            } else {
                Err(format!("condition says {message:?}, events {notes:?}"))
            })
        },
    )
    .await
}

/// Waits for an event with `reason` (`Scheduled`, `FailedScheduling`, ...)
/// about the pod `pod` in `namespace` whose note contains `containing`;
/// returns it. On timeout the message lists the pod's events.
pub async fn wait_pod_event(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    reason: &str,
    containing: &str,
    timeout: Duration,
) -> anyhow::Result<PodEvent> {
    let what = format!("a {reason} event about {pod} saying {containing:?}");
    until(&what, timeout, || async {
        let events = pod_events(client, namespace).await?;
        let about: Vec<PodEvent> = events.into_iter().filter(|e| e.pod == pod).collect();
        Ok(about
            .iter()
            .find(|e| e.reason == reason && e.note.contains(containing))
            .cloned()
            .ok_or_else(|| format!("its events: {about:#?}")))
    })
    .await
}

/// Waits until every CRD in `names` (`plural.group`) is Established.
pub async fn wait_crds_established(
    client: &kube::Client,
    names: &[&str],
    timeout: Duration,
) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in names {
        until(&format!("CRD {name} Established"), timeout, || async {
            Ok(match crds.get_opt(name).await? {
                Some(crd) if crate::phalanx::is_established(&crd) => Ok(()),
                Some(_) => Err("not Established yet".to_owned()),
                None => Err("absent".to_owned()),
            })
        })
        .await?;
    }
    Ok(())
}

/// Creates namespace `name` unless it exists and waits for its `default`
/// ServiceAccount, which kube-controller-manager adds and without which pods
/// are refused.
pub async fn namespace_ready_for_pods(
    client: &kube::Client,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    crate::phalanx::ensure_namespace(client, name).await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    until_some(
        &format!("ServiceAccount {name}/default"),
        timeout,
        || async { Ok(accounts.get_opt("default").await?.map(|_| ())) },
    )
    .await
}

/// Appending the schedulers' logs to a failed wait.
pub trait WithLogs<T> {
    /// On error, the error followed by [`ControlPlane::scheduler_logs`].
    fn with_logs(self, plane: &ControlPlane) -> anyhow::Result<T>;
}

impl<T> WithLogs<T> for anyhow::Result<T> {
    fn with_logs(self, plane: &ControlPlane) -> anyhow::Result<T> {
        self.map_err(|error| anyhow::anyhow!("{error:#}\n{}", plane.scheduler_logs()))
    }
}

/// The pods that are not being deleted.
fn live(mut pods: Vec<Pod>) -> Vec<Pod> {
    pods.retain(|p| !is_terminating(p));
    pods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn until_returns_the_value_once_the_check_gives_it() {
        let mut looks = 0;
        let value = until("three looks", Duration::from_secs(5), || {
            looks += 1;
            let seen = looks;
            async move {
                Ok(if seen >= 3 {
                    Ok(seen)
                } else {
                    Err(format!("look {seen}"))
                })
            }
        })
        .await
        .expect("reached");
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn a_timeout_names_what_was_awaited_and_the_last_reason() {
        let error = until::<(), _, _>("the impossible", Duration::from_millis(300), || async {
            Ok(Err("still impossible".to_owned()))
        })
        .await
        .expect_err("times out");
        let text = error.to_string();
        assert!(
            text.contains("waiting for the impossible: still impossible"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_error_of_the_check_ends_the_wait_at_once() {
        let start = Instant::now();
        let error = until_some::<(), _, _>("nothing", Duration::from_secs(30), || async {
            anyhow::bail!("the API is down")
        })
        .await
        .expect_err("fails");
        assert!(error.to_string().contains("the API is down"));
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
