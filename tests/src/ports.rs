//! Free loopback ports for the components.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use crate::error::{HarnessError, Result};

/// `n` distinct ports on 127.0.0.1 that were free a moment ago.
///
/// All listeners are held until every port is chosen, so the kernel cannot
/// hand out the same port twice; another process may still take one before
/// the component binds it, in which case the component fails to start and
/// says so in its log.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| HarnessError::io("binding a free loopback port", e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| HarnessError::io("reading a loopback port", e))
}
