//! A test that panics while its control plane runs leaves no process behind:
//! the panic unwinds through `ControlPlane`'s Drop, which kills every group.

use anyhow::bail;
use phalanx_e2e::process::{is_alive, live_children};
use phalanx_e2e::{Binaries, ControlPlane, ControlPlaneOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_are_stopped_when_a_test_panics() -> anyhow::Result<()> {
    let Some(binaries) = Binaries::for_test("processes_are_stopped_when_a_test_panics") else {
        return Ok(());
    };
    let options = ControlPlaneOptions {
        controller_manager: false,
        kwok: false,
        ..Default::default()
    };
    let plane = ControlPlane::start_with(binaries, options).await?;
    let pids = plane.pids();
    // A panicking test unwinds through the control plane's Drop.
    let outcome = std::thread::spawn(move || {
        let _plane = plane;
        panic!("deliberate panic while the control plane runs");
    })
    .join();
    if outcome.is_ok() {
        bail!("the thread was meant to panic");
    }
    let alive: Vec<_> = pids.iter().filter(|(_, pid)| is_alive(*pid)).collect();
    assert!(alive.is_empty(), "components survived a panic: {alive:?}");
    assert!(
        live_children().is_empty(),
        "child processes left: {:?}",
        live_children()
    );
    Ok(())
}
