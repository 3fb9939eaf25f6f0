//! A component that cannot start fails the harness quickly with an error
//! that carries its log tail, instead of hanging; and nothing is left running.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use phalanx_e2e::process::live_children;
use phalanx_e2e::{Binaries, ControlPlane, ControlPlaneOptions, HarnessError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_components_report_their_log_within_the_deadline() -> anyhow::Result<()> {
    let Some(binaries) =
        Binaries::for_test("failing_components_report_their_log_within_the_deadline")
    else {
        return Ok(());
    };

    // 1. The apiserver's etcd is unreachable (a loopback port nothing
    //    listens on): the apiserver never becomes ready.
    let unreachable = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let unreachable_url = format!("http://{unreachable}");
    let timeout = Duration::from_secs(20);
    let started = Instant::now();
    let err = ControlPlane::start_with(
        binaries.clone(),
        ControlPlaneOptions {
            external_etcd: Some(unreachable_url),
            apiserver_timeout: timeout,
            controller_manager: false,
            kwok: false,
            ..ControlPlaneOptions::default()
        },
    )
    .await
    .err()
    .ok_or_else(|| anyhow::anyhow!("apiserver became ready without etcd"))?;
    let elapsed = started.elapsed();
    let message = err.to_string();
    eprintln!("apiserver without etcd, after {elapsed:?}:\n{message}");
    assert!(
        matches!(
            err,
            HarnessError::NotReady { .. } | HarnessError::Exited { .. }
        ),
        "unexpected error kind: {message}"
    );
    assert!(
        message.contains("kube-apiserver"),
        "names the component: {message}"
    );
    assert!(
        message.contains("last lines of"),
        "quotes the log: {message}"
    );
    assert!(
        message.contains(&unreachable.to_string()) && message.contains("connection refused"),
        "log tail shows the failing etcd connection: {message}"
    );
    assert!(
        elapsed < timeout + Duration::from_secs(15),
        "took {elapsed:?}"
    );

    // 2. etcd's client port is already taken: etcd exits and says why.
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let started = Instant::now();
    let err = ControlPlane::start_with(
        binaries,
        ControlPlaneOptions {
            etcd_port: Some(port),
            controller_manager: false,
            kwok: false,
            ..ControlPlaneOptions::default()
        },
    )
    .await
    .err()
    .ok_or_else(|| anyhow::anyhow!("etcd started on a port that was taken"))?;
    let message = err.to_string();
    eprintln!(
        "etcd on a taken port, after {:?}:\n{message}",
        started.elapsed()
    );
    assert!(
        matches!(err, HarnessError::Exited { .. }),
        "etcd exits: {message}"
    );
    assert!(
        message.contains("address already in use"),
        "log tail says why: {message}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(taken);

    assert!(
        live_children().is_empty(),
        "child processes left: {:?}",
        live_children()
    );
    Ok(())
}
