//! Host ports, scalar resources and unsupported fields, from Pod and Node JSON to
//! what the engine gets.

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;

use super::{node_spec, pod_demand};
use phalanx_engine::{GpuModelRegistry, HostIp, HostPort, PodDemand, PortProtocol};

fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": "x", "namespace": "default"}, "spec": spec}))
        .unwrap()
}

fn demand(p: &Pod) -> PodDemand {
    pod_demand(p, &GpuModelRegistry::default()).unwrap()
}

fn error(p: &Pod) -> String {
    pod_demand(p, &GpuModelRegistry::default())
        .unwrap_err()
        .to_string()
}

fn scalar(d: &PodDemand) -> Vec<(String, u64)> {
    d.scalar
        .iter()
        .map(|r| (r.name.to_string(), r.amount))
        .collect()
}

#[test]
fn host_ports_of_app_containers_with_defaults() {
    let p = pod(json!({
        "containers": [
            {"name": "web", "ports": [
                {"containerPort": 80, "hostPort": 8080},
                {"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "10.0.0.1"},
                {"containerPort": 9090}
            ]},
            {"name": "sctp", "ports": [{"containerPort": 7, "hostPort": 7, "protocol": "SCTP", "hostIP": "0.0.0.0"}]}
        ],
        "initContainers": [
            {"name": "sidecar", "restartPolicy": "Always", "ports": [{"containerPort": 1, "hostPort": 1}]}
        ]
    }));
    let port = |port, protocol, ip: HostIp| HostPort { port, protocol, ip };
    assert_eq!(
        demand(&p).host_ports,
        vec![
            port(8080, PortProtocol::Tcp, HostIp::All),
            port(53, PortProtocol::Udp, HostIp::Only("10.0.0.1".into())),
            port(7, PortProtocol::Sctp, HostIp::All),
        ],
        "a port without hostPort and init containers' ports are not host ports"
    );
    let bad = pod(json!({"containers": [{"name": "web", "ports": [
        {"containerPort": 80, "hostPort": 80, "protocol": "QUIC"}]}]}));
    assert!(
        error(&bad).contains(r#"spec.containers["web"].ports[0].protocol"#),
        "{}",
        error(&bad)
    );
}

#[test]
fn scalar_requests_follow_the_cpu_rules() {
    let p = pod(json!({
        "containers": [
            {"name": "a", "resources": {"requests": {"ephemeral-storage": "1Gi", "example.com/foo": "1"}}},
            {"name": "b", "resources": {"limits": {"example.com/foo": "2", "hugepages-2Mi": "4Mi"}}}
        ],
        "initContainers": [
            {"name": "init", "resources": {"requests": {"example.com/foo": "5", "rdma/hca": "0"}}},
            {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"ephemeral-storage": "1Gi"}}}
        ],
        "overhead": {"example.com/foo": "1"}
    }));
    assert_eq!(
        scalar(&demand(&p)),
        vec![
            ("ephemeral-storage".to_string(), 2 << 30),
            // max(app 1 + 2, init 5) + overhead 1
            ("example.com/foo".to_string(), 6),
            ("hugepages-2Mi".to_string(), 4 << 20),
        ],
        "limits stand in for requests; zero requests are dropped"
    );
    let plain =
        pod(json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]}));
    assert!(demand(&plain).scalar.is_empty());
    assert!(demand(&plain).host_ports.is_empty());
    let bad = pod(
        json!({"containers": [{"name": "a", "resources": {"requests": {"example.com/foo": "x"}}}]}),
    );
    assert!(
        error(&bad).contains(r#"requests["example.com/foo"]"#),
        "{}",
        error(&bad)
    );
}

#[test]
fn node_offers_its_scalar_resources() {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "n1"},
        "status": {
            "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi", "rdma/hca": "4"},
            "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "120Gi", "hugepages-1Gi": "2Gi", "rdma/hca": "8"}
        }
    }))
    .unwrap();
    let spec = node_spec(&node, None).unwrap();
    assert_eq!(
        spec.scalar_resources,
        vec![
            ("ephemeral-storage".to_string(), 100 << 30),
            ("hugepages-1Gi".to_string(), 2 << 30),
            ("rdma/hca".to_string(), 4),
        ],
        "allocatable first, capacity for what allocatable lacks; cpu, memory, pods apart"
    );
}

#[test]
fn unsupported_fields_are_refused_by_name_unless_bound() {
    let cases = [
        (
            json!({"resourceClaims": [{"name": "gpu", "resourceClaimName": "c"}],
                   "containers": [{"name": "a"}]}),
            "spec.resourceClaims",
        ),
        (
            json!({"containers": [{"name": "a", "resources": {"claims": [{"name": "gpu"}]}}]}),
            r#"spec.containers["a"].resources.claims"#,
        ),
    ];
    for (spec, field) in cases {
        let pending = pod(spec.clone());
        let message = error(&pending);
        assert!(
            message.contains(field) && message.contains("not supported"),
            "{message}"
        );
        let mut bound = spec;
        bound["nodeName"] = json!("n1");
        assert!(
            pod_demand(&pod(bound), &GpuModelRegistry::default()).is_ok(),
            "a bound pod with {field} is still accounted"
        );
    }
}

#[test]
fn preferred_node_affinity_terms_are_read_with_their_weights() {
    let p = pod(json!({
        "containers": [{"name": "a"}],
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 5, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
            {"weight": 0, "preference": {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}},
            {"weight": 7, "preference": {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}}
        ]}}
    }));
    let rules = demand(&p).rules;
    assert_eq!(
        rules
            .preferred_terms
            .iter()
            .map(|t| t.weight)
            .collect::<Vec<_>>(),
        vec![5, 7],
        "a weight-0 term counts for nothing"
    );
    assert!(rules.is_empty(), "preferred terms never filter");
    let bad = pod(json!({
        "containers": [{"name": "a"}],
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "preference": {"matchExpressions": [{"key": "zone", "operator": "Near"}]}}
        ]}}
    }));
    assert!(
        error(&bad).contains(
            "preferredDuringSchedulingIgnoredDuringExecution[0].preference.matchExpressions[0]"
        ),
        "{}",
        error(&bad)
    );
}
