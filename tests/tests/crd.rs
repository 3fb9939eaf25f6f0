//! A CustomResourceDefinition can be installed on the harness's apiserver,
//! becomes Established, and objects of it can be created and read back.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::Api;
use phalanx_e2e::process::live_children;
use phalanx_e2e::wait::{self, wait_crds_established};
use phalanx_e2e::{Binaries, ControlPlane, ControlPlaneOptions};

fn widget_crd() -> anyhow::Result<CustomResourceDefinition> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "widgets.e2e.phalanx.dev" },
        "spec": {
            "group": "e2e.phalanx.dev",
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget" },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": {
                        "type": "object",
                        "required": ["gpus"],
                        "properties": { "gpus": { "type": "integer", "minimum": 0 } },
                    }},
                }},
            }],
        },
    }))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_is_installed_and_served() -> anyhow::Result<()> {
    let Some(binaries) = Binaries::for_test("crd_is_installed_and_served") else {
        return Ok(());
    };
    let options = ControlPlaneOptions {
        controller_manager: false,
        kwok: false,
        ..ControlPlaneOptions::default()
    };
    let plane = ControlPlane::start_with(binaries, options).await?;
    let client = plane.client();

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &widget_crd()?).await?;
    wait_crds_established(
        &client,
        &["widgets.e2e.phalanx.dev"],
        Duration::from_secs(30),
    )
    .await?;

    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("e2e.phalanx.dev", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    let widget: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "e2e.phalanx.dev/v1",
        "kind": "Widget",
        "metadata": { "name": "w1" },
        "spec": { "gpus": 3 },
    }))?;
    // Discovery of a fresh CRD can lag Established by a moment; retry briefly.
    wait::until("a Widget created", Duration::from_secs(30), || async {
        Ok(widgets
            .create(&PostParams::default(), &widget)
            .await
            .map(|_| ())
            .map_err(|e| format!("last error: {e}")))
    })
    .await?;
    let read = widgets.get("w1").await?;
    assert_eq!(
        read.data["spec"]["gpus"], 3,
        "spec round-trips: {:?}",
        read.data
    );

    // The schema is enforced: a negative GPU count is rejected by the apiserver.
    let mut invalid = widget.clone();
    invalid.metadata.name = Some("w2".to_owned());
    invalid.data["spec"]["gpus"] = serde_json::json!(-1);
    let rejected = widgets.create(&PostParams::default(), &invalid).await;
    assert!(rejected.is_err(), "schema validation rejects gpus=-1");

    drop(plane);
    assert!(
        live_children().is_empty(),
        "child processes left: {:?}",
        live_children()
    );
    Ok(())
}
