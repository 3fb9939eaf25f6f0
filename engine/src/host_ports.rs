//! Host ports (kube-scheduler's NodePorts filter): two pods that want the same
//! port and protocol on overlapping host addresses never share a node.

/// The transport a host port is opened for; Kubernetes defaults it to TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum PortProtocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

/// The address a host port binds. `All` is Kubernetes' default (`hostIP` empty or
/// `0.0.0.0`) and overlaps every address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum HostIp {
    #[default]
    All,
    Only(String),
}

/// One `containerPort` with a `hostPort`, as it occupies the node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub port: u16,
    pub protocol: PortProtocol,
    pub ip: HostIp,
}

impl HostPort {
    /// Same port and protocol on addresses that overlap: equal, or either binding
    /// all of them.
    pub fn conflicts_with(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && match (&self.ip, &other.ip) {
                (HostIp::All, _) | (_, HostIp::All) => true,
                (HostIp::Only(a), HostIp::Only(b)) => a == b,
            }
    }
}

/// True when none of `wanted` conflicts with a port already `used` on the node.
/// Only pods that ask for host ports reach the loop.
pub(crate) fn ports_free(used: &[HostPort], wanted: &[HostPort]) -> bool {
    wanted
        .iter()
        .all(|w| !used.iter().any(|u| u.conflicts_with(w)))
}

#[cfg(test)]
mod tests {
    use super::PortProtocol::{Tcp, Udp};
    use super::*;

    fn port(port: u16, protocol: PortProtocol, ip: &str) -> HostPort {
        HostPort {
            port,
            protocol,
            ip: match ip {
                "" => HostIp::All,
                ip => HostIp::Only(ip.into()),
            },
        }
    }

    /// The situations of kube-scheduler's NodePorts filter table, in our own
    /// words: (what, used on the node, wanted by the pod, fits).
    #[test]
    fn conflicts_follow_kube_scheduler() {
        let cases: &[(&str, Vec<HostPort>, Vec<HostPort>, bool)] = &[
            ("nothing used", vec![], vec![port(8080, Tcp, "")], true),
            (
                "other port",
                vec![port(8080, Udp, "127.0.0.1")],
                vec![port(8081, Udp, "127.0.0.1")],
                true,
            ),
            (
                "same port and address",
                vec![port(8080, Udp, "127.0.0.1")],
                vec![port(8080, Udp, "127.0.0.1")],
                false,
            ),
            (
                "same port, other address",
                vec![port(8080, Tcp, "127.0.0.1")],
                vec![port(8080, Tcp, "127.0.0.2")],
                true,
            ),
            (
                "same port and address, other protocol",
                vec![port(8080, Tcp, "127.0.0.1")],
                vec![port(8080, Udp, "127.0.0.1")],
                true,
            ),
            (
                "second of two wanted ports taken",
                vec![port(8080, Udp, "127.0.0.1")],
                vec![port(8081, Tcp, "127.0.0.1"), port(8080, Udp, "127.0.0.1")],
                false,
            ),
            (
                "all addresses wanted, one address used",
                vec![port(8001, Tcp, "127.0.0.1")],
                vec![port(8001, Tcp, "")],
                false,
            ),
            (
                "one address wanted, all addresses used",
                vec![port(8001, Tcp, "")],
                vec![port(8001, Tcp, "10.0.0.10")],
                false,
            ),
            (
                "all addresses on both sides, other protocol",
                vec![port(8001, Tcp, "")],
                vec![port(8001, Udp, "")],
                true,
            ),
            (
                "all addresses used, other port wanted",
                vec![port(8001, Tcp, ""), port(8002, Udp, "")],
                vec![port(8003, Tcp, "10.0.0.10")],
                true,
            ),
        ];
        for (name, used, wanted, fits) in cases {
            assert_eq!(ports_free(used, wanted), *fits, "{name}");
        }
    }
}
