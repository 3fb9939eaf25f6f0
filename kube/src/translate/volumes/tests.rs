#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use serde_json::json;

use super::*;

fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn volumes_of(spec: serde_json::Value) -> Result<Option<PodVolumes>, TranslateError> {
    let pod: Pod = from(json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": spec,
    }));
    pod_volumes("pod shop/web", &pod, pod.spec.as_ref().unwrap())
}

#[test]
fn a_pod_mounts_its_claims_and_its_ephemeral_volumes_claims_once_each() {
    let got = volumes_of(json!({
        "containers": [],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "db"}},
            {"name": "again", "persistentVolumeClaim": {"claimName": "db"}},
            {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
            {"name": "config", "configMap": {"name": "cm"}},
        ],
    }))
    .unwrap()
    .unwrap();
    assert_eq!(got.claims, vec!["shop/db", "shop/web-scratch"]);
    assert_eq!(
        volumes_of(json!({"containers": [], "volumes": [{"name": "c", "emptyDir": {}}]})).unwrap(),
        None,
        "no claims: the plain path"
    );
}

#[test]
fn inline_csi_volumes_are_kept_for_attach_limits() {
    let got = volumes_of(json!({
        "containers": [],
        "volumes": [
            {"name": "secrets", "csi": {"driver": "secrets-store.csi.k8s.io"}},
            {"name": "config", "configMap": {"name": "cm"}},
        ],
    }))
    .unwrap()
    .unwrap();
    assert!(got.claims.is_empty());
    assert_eq!(
        got.inline_csi,
        vec![(
            "secrets-store.csi.k8s.io".to_owned(),
            "shop/web/secrets".to_owned()
        )]
    );
}

#[test]
fn an_empty_claim_name_is_refused_naming_the_field() {
    let error = volumes_of(json!({
        "containers": [],
        "volumes": [{"name": "c", "emptyDir": {}}, {"name": "data", "persistentVolumeClaim": {"claimName": ""}}],
    }))
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "pod shop/web: spec.volumes[1].persistentVolumeClaim.claimName: is empty"
    );
}

#[test]
fn claims_translate_with_size_modes_and_selector() {
    let claim: PersistentVolumeClaim = from(json!({
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {
            "storageClassName": "local",
            "accessModes": ["ReadWriteOnce", "ReadWriteOncePod"],
            "resources": {"requests": {"storage": "1Gi"}},
            "volumeMode": "Block",
            "selector": {"matchLabels": {"tier": "fast"}},
        },
    }));
    let spec = claim_spec(&claim).unwrap();
    assert_eq!(spec.key(), "shop/db");
    assert_eq!(spec.storage_class, "local");
    assert_eq!(spec.request_bytes, 1 << 30);
    assert_eq!(
        spec.access_modes,
        vec![AccessMode::ReadWriteOnce, AccessMode::ReadWriteOncePod]
    );
    assert_eq!(spec.volume_mode, VolumeMode::Block);
    assert!(spec.selector.is_some());
    assert!(!spec.is_bound());

    let bad: PersistentVolumeClaim = from(json!({
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"accessModes": ["ReadWriteSometimes"]},
    }));
    assert_eq!(
        claim_spec(&bad).unwrap_err().to_string(),
        "persistentvolumeclaim shop/db: spec.accessModes[0]: unknown access mode \"ReadWriteSometimes\""
    );
}

#[test]
fn volumes_translate_with_node_affinity_claim_ref_and_driver() {
    let volume: PersistentVolume = from(json!({
        "metadata": {"name": "pv-1", "labels": {"topology.kubernetes.io/zone": "z1"}},
        "spec": {
            "storageClassName": "local",
            "capacity": {"storage": "2Gi"},
            "accessModes": ["ReadWriteOnce"],
            "claimRef": {"namespace": "shop", "name": "db"},
            "csi": {"driver": "csi.example.com", "volumeHandle": "h"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}
            ]}},
        },
        "status": {"phase": "Bound"},
    }));
    let spec = volume_spec(&volume).unwrap();
    assert_eq!(spec.capacity_bytes, 2 << 30);
    assert_eq!(spec.claim_ref.as_deref(), Some("shop/db"));
    assert_eq!(spec.csi_driver.as_deref(), Some("csi.example.com"));
    assert!(!spec.unavailable);
    let n1 = [("kubernetes.io/hostname".to_owned(), "n1".to_owned())].into();
    let n2 = [("kubernetes.io/hostname".to_owned(), "n2".to_owned())].into();
    assert!(spec.admits(&n1));
    assert!(!spec.admits(&n2));

    let bad: PersistentVolume = from(json!({
        "metadata": {"name": "pv-2"},
        "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "k", "operator": "Near", "values": ["x"]}]}
        ]}}},
    }));
    let error = volume_spec(&bad).unwrap_err().to_string();
    assert!(
        error.starts_with("persistentvolume pv-2: spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0]"),
        "{error}"
    );
}

#[test]
fn storage_classes_and_csi_nodes_translate() {
    let class: StorageClass = from(json!({
        "metadata": {"name": "local"},
        "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowedTopologies": [{"matchLabelExpressions": [{"key": "zone", "values": ["a"]}]}],
    }));
    let spec = storage_class_spec(&class).unwrap();
    assert_eq!(spec.binding_mode, BindingMode::WaitForFirstConsumer);
    assert!(!spec.provisions());
    assert_eq!(spec.allowed_topologies.len(), 1);
    let bad: StorageClass = from(json!({
        "metadata": {"name": "odd"}, "provisioner": "x", "volumeBindingMode": "Later",
    }));
    assert_eq!(
        storage_class_spec(&bad).unwrap_err().to_string(),
        "storageclass odd: volumeBindingMode: unknown mode \"Later\"; Immediate or WaitForFirstConsumer"
    );
    let csi_node: CSINode = from(json!({
        "metadata": {"name": "n1"},
        "spec": {"drivers": [
            {"name": "csi.example.com", "nodeID": "n1", "allocatable": {"count": 2}},
            {"name": "unlimited", "nodeID": "n1"},
        ]},
    }));
    let (node, limits) = attach_limits(&csi_node);
    assert_eq!(node, "n1");
    assert_eq!(limits, HashMap::from([("csi.example.com".to_owned(), 2)]));
}
