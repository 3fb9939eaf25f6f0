//! The components' endpoints over HTTPS on a real control plane:
//!
//! * `phalanx-scheduler run` with `http.tls` and `http.authentication:
//!   delegated`: the probes answer without credentials, `/metrics` wants a
//!   bearer token the API server's TokenReview accepts or a client
//!   certificate of the configured CA, and RBAC (`get` on the non-resource
//!   URL `/metrics`) through a SubjectAccessReview: 401, 403, then 200.
//! * The autoscaler and the device plugin (in this process) with the same
//!   settings: 401 without credentials, 403 without RBAC, 200 with it.
//! * The upstream kube-scheduler calling the extender over HTTPS with a
//!   client certificate (`deploy/extender/kube-scheduler-config-tls.yaml`):
//!   a GPU pod is placed and bound with its assignment; a client without a
//!   certificate, or with one for another name, is refused in the handshake.
//!
//! Needs the control-plane binaries and `cargo build -p phalanx-scheduler
//! --bins`; without them it prints `skipped: <test>: <why>`, and with
//! `PHALANX_E2E=1` it fails.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use phalanx_autoscaler::controller::config::{AutoscalerConfig, ConfigFile};
use phalanx_device_plugin::backend::{FakeBackend, FakeNode};
use phalanx_device_plugin::daemon::{run_daemon, BackendChoice, DaemonConfig};
use phalanx_e2e::endpoints::{
    https_get, service_account_token, wait_status, Credentials, EndpointPki,
};
use phalanx_e2e::ports::free_ports;
use phalanx_e2e::wait::{wait_bound, WithLogs};
use phalanx_e2e::{
    assignment_of, create_gpu_nodes, create_pods, gpu_worker_container, install_phalanx_crds,
    node_of, phalanx_scheduler_for_test, Binaries, ControlPlane, GpuNodeSpec, PhalanxOptions,
    PodBuilder, SchedulerOptions,
};
use phalanx_runtime::auth::{DelegatedAuth, KubeReviews};
use phalanx_runtime::http::ServerSecurity;
use phalanx_runtime::tls::{ClientCertificates, ReloadingTls, TlsFiles, TlsKeys};

/// How long any one step may take.
const WAIT: Duration = Duration::from_secs(60);
const NS: &str = "monitoring";
/// The scraper's ClusterRole, as the chart ships it.
const METRICS_READER: &str = "phalanx-metrics-reader";

#[tokio::test]
async fn metrics_over_https_need_an_authorized_token_or_certificate() {
    if let Err(error) = metrics_need_authorization().await {
        panic!("{error:#}");
    }
}

async fn metrics_need_authorization() -> anyhow::Result<()> {
    let test = "metrics_over_https_need_an_authorized_token_or_certificate";
    let Some(binaries) = Binaries::for_test(test) else {
        return Ok(());
    };
    let Some(binary) = phalanx_scheduler_for_test(test) else {
        return Ok(());
    };
    let mut plane = ControlPlane::start(binaries).await?;
    let client = plane.client();
    install_phalanx_crds(&client).await?;
    let pki = EndpointPki::generate(&plane.dir().join("endpoints"), "metrics-client-ca")?;
    let options = PhalanxOptions {
        binary: Some(binary),
        ..PhalanxOptions::default()
    };
    let scheduler = plane.start_phalanx_scheduler_https(&options, &pki).await?;
    let addr = scheduler.http;
    let anonymous = Credentials::default();

    // The probes need nothing (kubelet sends no credentials).
    for path in ["/healthz", "/livez", "/readyz"] {
        let (status, body) = get(addr, &pki, path, anonymous).await?;
        assert_eq!((status, body.as_str()), (200, "ok"), "{path}");
    }
    // /metrics: no credentials, then a token the API server does not know.
    let (status, body) = get(addr, &pki, "/metrics", anonymous).await?;
    assert_eq!(status, 401, "{body}");
    let forged = Credentials {
        bearer_token: Some("not-a-token"),
        ..anonymous
    };
    let (status, body) = get(addr, &pki, "/metrics", forged).await?;
    assert_eq!(status, 401, "{body}");

    // A real ServiceAccount token without RBAC: authenticated, not authorized.
    let stranger_token = service_account_token(&client, NS, "stranger").await?;
    let stranger = Credentials {
        bearer_token: Some(&stranger_token),
        ..anonymous
    };
    let (status, body) = get(addr, &pki, "/metrics", stranger).await?;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("system:serviceaccount:monitoring:stranger"),
        "the 403 names the user: {body}"
    );

    // The chart's reader role, bound to a scraper ServiceAccount and to the
    // group of client certificates.
    create_metrics_reader(&client).await?;
    // Bound first, so that it is in the authorizer's view once the
    // scraper's binding below is; used to time an uncached request.
    let fresh_token = service_account_token(&client, NS, "fresh-scraper").await?;
    bind_metrics_reader(
        &client,
        "fresh-scraper",
        Subject {
            kind: "ServiceAccount".to_owned(),
            name: "fresh-scraper".to_owned(),
            namespace: Some(NS.to_owned()),
            api_group: None,
        },
    )
    .await?;
    let scraper_token = service_account_token(&client, NS, "prometheus").await?;
    bind_metrics_reader(
        &client,
        "prometheus",
        Subject {
            kind: "ServiceAccount".to_owned(),
            name: "prometheus".to_owned(),
            namespace: Some(NS.to_owned()),
            api_group: None,
        },
    )
    .await?;
    bind_metrics_reader(
        &client,
        "scrapers",
        Subject {
            kind: "Group".to_owned(),
            name: "metrics-scrapers".to_owned(),
            namespace: None,
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
        },
    )
    .await?;
    let scraper = Credentials {
        bearer_token: Some(&scraper_token),
        ..anonymous
    };
    let (status, body) = wait_status(addr, &pki.ca, "/metrics", scraper, 200, WAIT)
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("phalanx_scheduler_"), "{body}");

    // A client certificate of the configured CA: CN is the user, O the group.
    let certificate = pki.client("vmagent", Some("metrics-scrapers"))?;
    let with_certificate = Credentials {
        certificate: Some(&certificate),
        ..anonymous
    };
    let (status, body) = wait_status(addr, &pki.ca, "/metrics", with_certificate, 200, WAIT)
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(status, 200, "{body}");
    // The same CN outside the group: forbidden.
    let outsider = pki.client("outsider", None)?;
    let (status, body) = get(
        addr,
        &pki,
        "/metrics",
        Credentials {
            certificate: Some(&outsider),
            ..anonymous
        },
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    // A certificate from another CA does not get through the handshake.
    let other_pki = EndpointPki::generate(&plane.dir().join("other-ca"), "other-ca")?;
    let foreign = other_pki.client("vmagent", Some("metrics-scrapers"))?;
    let refused = https_get(
        addr,
        &pki.ca,
        "/metrics",
        Credentials {
            certificate: Some(&foreign),
            ..anonymous
        },
    )
    .await;
    assert!(
        refused.is_err(),
        "a foreign certificate was accepted: {refused:?}"
    );

    // What the decision cache saves: the first request of a new user pays a
    // TokenReview and a SubjectAccessReview, the next ones neither (printed,
    // not asserted).
    let fresh = Credentials {
        bearer_token: Some(&fresh_token),
        ..anonymous
    };
    let started = Instant::now();
    let (status, _) = get(addr, &pki, "/healthz", fresh).await?;
    let probe = started.elapsed();
    assert_eq!(status, 200);
    let started = Instant::now();
    let (status, _) = get(addr, &pki, "/metrics", fresh).await?;
    let first = started.elapsed();
    assert_eq!(status, 200);
    let started = Instant::now();
    const REPEATS: u32 = 20;
    for _ in 0..REPEATS {
        let (status, _) = get(addr, &pki, "/metrics", fresh).await?;
        assert_eq!(status, 200);
    }
    let cached = started.elapsed() / REPEATS;
    println!(
        "endpoints: GET over TLS (new connection each): /healthz {:.1} ms; /metrics of a new user {:.1} ms \
         (TokenReview + SubjectAccessReview), with cached decisions {:.1} ms (mean of {REPEATS})",
        probe.as_secs_f64() * 1e3,
        first.as_secs_f64() * 1e3,
        cached.as_secs_f64() * 1e3,
    );
    Ok(())
}

async fn get(
    addr: SocketAddr,
    pki: &EndpointPki,
    path: &str,
    credentials: Credentials<'_>,
) -> anyhow::Result<(u16, String)> {
    https_get(addr, &pki.ca, path, credentials)
        .await
        .map_err(anyhow::Error::msg)
}

async fn create_metrics_reader(client: &kube::Client) -> anyhow::Result<()> {
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(METRICS_READER.to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            non_resource_urls: Some(vec!["/metrics".to_owned()]),
            verbs: vec!["get".to_owned()],
            ..PolicyRule::default()
        }]),
        ..ClusterRole::default()
    };
    roles.create(&PostParams::default(), &role).await?;
    Ok(())
}

async fn bind_metrics_reader(
    client: &kube::Client,
    name: &str,
    subject: Subject,
) -> anyhow::Result<()> {
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{METRICS_READER}-{name}")),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "ClusterRole".to_owned(),
            name: METRICS_READER.to_owned(),
        },
        subjects: Some(vec![subject]),
    };
    bindings.create(&PostParams::default(), &binding).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaler_and_device_plugin_metrics_need_authorization_too() {
    if let Err(error) = components_need_authorization().await {
        panic!("{error:#}");
    }
}

async fn components_need_authorization() -> anyhow::Result<()> {
    let test = "autoscaler_and_device_plugin_metrics_need_authorization_too";
    let Some(binaries) = Binaries::for_test(test) else {
        return Ok(());
    };
    let plane = ControlPlane::start(binaries).await?;
    let client = plane.client();
    install_phalanx_crds(&client).await?;
    let node = create_gpu_nodes(&client, "dp", 1, &GpuNodeSpec::with_gpus(2, "H100"))
        .await?
        .remove(0);
    let pki = EndpointPki::generate(&plane.dir().join("components"), "components-ca")?;
    create_metrics_reader(&client).await?;
    let scraper_token = service_account_token(&client, NS, "prometheus").await?;
    let stranger_token = service_account_token(&client, NS, "stranger").await?;
    bind_metrics_reader(
        &client,
        "prometheus",
        Subject {
            kind: "ServiceAccount".to_owned(),
            name: "prometheus".to_owned(),
            namespace: Some(NS.to_owned()),
            api_group: None,
        },
    )
    .await?;
    let ports = free_ports(2)?;
    let autoscaler_addr = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let plugin_addr = SocketAddr::from(([127, 0, 0, 1], ports[1]));

    // The autoscaler, from its config file's keys.
    let config = AutoscalerConfig::from_yaml(
        &serde_json::json!({
            // Nothing listens there: /metrics is served whatever Prometheus says.
            "prometheus": { "url": "http://127.0.0.1:9" },
            "leaderElection": { "enabled": false, "identity": "autoscaler-https" },
            "http": {
                "bindAddress": autoscaler_addr.to_string(),
                "tls": pki.tls_section(),
                "authentication": "delegated",
            },
            "logging": { "format": "text" },
        })
        .to_string(),
        "test config",
    )?;
    let (stop_autoscaler, autoscaler_stopped) = tokio::sync::oneshot::channel::<()>();
    let autoscaler = tokio::spawn(phalanx_autoscaler::controller::run(
        config,
        client.clone(),
        async {
            let _ = autoscaler_stopped.await;
        },
    ));

    // The device plugin's daemon, secured as its --metrics-tls-* and
    // --metrics-authentication flags make it.
    let mut daemon = DaemonConfig::for_node(&node);
    daemon.metrics_address = Some(plugin_addr);
    let files = TlsFiles {
        cert_file: pki.server_cert.clone(),
        key_file: pki.server_key.clone(),
        client_ca_file: Some(pki.ca.clone()),
    };
    let always_allow = ["/healthz", "/readyz", "/livez"]
        .map(str::to_owned)
        .to_vec();
    daemon.metrics_security = ServerSecurity::plain()
        .with_tls(ReloadingTls::load(
            files,
            TlsKeys::HTTP,
            ClientCertificates::Optional,
        )?)
        .with_auth(Arc::new(DelegatedAuth::new(
            Arc::new(KubeReviews::new(client.clone())),
            always_allow,
        )));
    let (stop_plugin, plugin_stopping) = tokio::sync::watch::channel(false);
    let fake = FakeBackend::new(FakeNode::uniform(2, "NVIDIA H100 80GB HBM3", 81_559));
    let plugin = tokio::spawn(run_daemon(
        daemon,
        BackendChoice::Fake(fake),
        Some(client.clone()),
        None,
        plugin_stopping,
        |_| {},
    ));

    let anonymous = Credentials::default();
    let stranger = Credentials {
        bearer_token: Some(&stranger_token),
        ..anonymous
    };
    let scraper = Credentials {
        bearer_token: Some(&scraper_token),
        ..anonymous
    };
    for (component, addr, metric) in [
        ("autoscaler", autoscaler_addr, "phalanx_autoscaler_"),
        ("device plugin", plugin_addr, "phalanx_device_plugin_"),
    ] {
        // Up once /healthz answers over TLS without credentials.
        let (status, body) = wait_status(addr, &pki.ca, "/healthz", anonymous, 200, WAIT)
            .await
            .map_err(|e| anyhow::anyhow!("{component}: {e}"))?;
        assert_eq!(status, 200, "{component}: {body}");
        let (status, body) = get(addr, &pki, "/metrics", anonymous).await?;
        assert_eq!(status, 401, "{component}: {body}");
        let (status, body) = get(addr, &pki, "/metrics", stranger).await?;
        assert_eq!(status, 403, "{component}: {body}");
        let (status, body) = wait_status(addr, &pki.ca, "/metrics", scraper, 200, WAIT)
            .await
            .map_err(|e| anyhow::anyhow!("{component}: {e}"))?;
        assert_eq!(status, 200, "{component}: {body}");
        assert!(body.contains(metric), "{component}: {body}");
    }

    let _ = stop_autoscaler.send(());
    let _ = stop_plugin.send(true);
    autoscaler.await??;
    plugin.await??;
    Ok(())
}

/// The shipped HTTPS configuration, so that the test proves the file works.
const TLS_CONFIG: &str = include_str!("../../deploy/extender/kube-scheduler-config-tls.yaml");

/// The extender stanza of deploy/extender/kube-scheduler-config-tls.yaml as
/// shipped, pointed at the local extender and the test's certificates.
fn tls_extender_config(
    address: SocketAddr,
    pki: &EndpointPki,
    client_cert: &phalanx_e2e::endpoints::ClientCertificate,
) -> anyhow::Result<serde_json::Value> {
    let config: serde_json::Value = serde_yaml_ng::from_str(TLS_CONFIG)?;
    let mut extender = config["extenders"][0].clone();
    anyhow::ensure!(
        extender["enableHTTPS"] == true
            && extender["urlPrefix"]
                .as_str()
                .is_some_and(|u| u.starts_with("https://")),
        "the shipped config must call the extender over HTTPS: {extender}"
    );
    extender["urlPrefix"] = format!("https://{address}").into();
    extender["tlsConfig"] = serde_json::json!({
        "certFile": client_cert.cert,
        "keyFile": client_cert.key,
        "caFile": pki.ca,
    });
    Ok(extender)
}

#[tokio::test]
async fn kube_scheduler_calls_the_extender_over_https_with_a_client_certificate() {
    if let Err(error) = extender_over_https().await {
        panic!("{error:#}");
    }
}

async fn extender_over_https() -> anyhow::Result<()> {
    let test = "kube_scheduler_calls_the_extender_over_https_with_a_client_certificate";
    let Some(binaries) = Binaries::for_test(test) else {
        return Ok(());
    };
    let Some(binary) = phalanx_scheduler_for_test(test) else {
        return Ok(());
    };
    let mut plane = ControlPlane::start(binaries).await?;
    let client = plane.client();
    install_phalanx_crds(&client).await?;
    create_gpu_nodes(&client, "h100", 1, &GpuNodeSpec::with_gpus(2, "H100")).await?;
    let pki = EndpointPki::generate(&plane.dir().join("extender"), "extender-client-ca")?;
    let kube_scheduler_cert = pki.client("kube-scheduler", None)?;
    let mut tls = pki.tls_section();
    tls["allowedClientNames"] = serde_json::json!(["kube-scheduler"]);
    let options = PhalanxOptions {
        binary: Some(binary),
        extra: serde_json::json!({ "extender": { "tls": tls } }),
        ..PhalanxOptions::default()
    };
    let (_extender, address) = plane.start_phalanx_extender(&options).await?;
    plane
        .start_kube_scheduler(&SchedulerOptions {
            extenders: vec![tls_extender_config(address, &pki, &kube_scheduler_cert)?],
            ..SchedulerOptions::default()
        })
        .await?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let names = create_pods(
        &pods,
        vec![PodBuilder::new("train-0", "default-scheduler", gpu_worker_container(1)).build()],
    )
    .await?;
    let bound = wait_bound(&pods, &names, WAIT).await.with_logs(&plane)?;
    let pod = &bound[0];
    let assignment = assignment_of(pod)
        .context("the extender's /bind writes the assignment")?
        .map_err(anyhow::Error::msg)?;
    assert_eq!(Some(assignment.node.as_str()), node_of(pod));

    // Without a client certificate, or with one for another name, the
    // handshake fails before any request is read.
    let anonymous = https_get(address, &pki.ca, "/filter", Credentials::default()).await;
    assert!(
        anonymous.is_err(),
        "no certificate but answered: {anonymous:?}"
    );
    let intruder = pki.client("intruder", None)?;
    let refused = https_get(
        address,
        &pki.ca,
        "/filter",
        Credentials {
            certificate: Some(&intruder),
            ..Credentials::default()
        },
    )
    .await;
    assert!(refused.is_err(), "CN intruder but answered: {refused:?}");
    // And plain HTTP gets no HTTP answer at all.
    let plain = phalanx_e2e::probe::http_get(address, "/filter").await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    Ok(())
}
