//! Host ports a pod opens, as kube-scheduler's NodePorts plugin reads them: the
//! `ports[].hostPort` of `spec.containers` only (in v1.33 it does not read init
//! or sidecar containers' ports), protocol defaulting to TCP, an empty `hostIP`
//! meaning `0.0.0.0`, which overlaps every address.

use k8s_openapi::api::core::v1::PodSpec;
use phalanx_engine::{HostIp, HostPort, PortProtocol};

use super::TranslateError;

/// Every host port the pod's containers ask for, in container order.
pub(crate) fn host_ports(object: &str, spec: &PodSpec) -> Result<Vec<HostPort>, TranslateError> {
    let mut out = Vec::new();
    for c in &spec.containers {
        for (i, p) in c.ports.iter().flatten().enumerate() {
            let Some(host_port) = p.host_port.filter(|port| *port > 0) else {
                continue;
            };
            let field = format!("spec.containers[{:?}].ports[{i}]", c.name);
            let port = u16::try_from(host_port).map_err(|_| {
                TranslateError::invalid(
                    object,
                    format!("{field}.hostPort"),
                    format!("{host_port} is not a port number (1..65535)"),
                )
            })?;
            let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" | "" => PortProtocol::Tcp,
                "UDP" => PortProtocol::Udp,
                "SCTP" => PortProtocol::Sctp,
                other => {
                    return Err(TranslateError::invalid(
                        object,
                        format!("{field}.protocol"),
                        format!("unknown protocol {other:?}"),
                    ))
                }
            };
            let ip = match p.host_ip.as_deref().unwrap_or_default() {
                "" | "0.0.0.0" => HostIp::All,
                ip => HostIp::Only(ip.to_owned()),
            };
            out.push(HostPort { port, protocol, ip });
        }
    }
    Ok(out)
}
