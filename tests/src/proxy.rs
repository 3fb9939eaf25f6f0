//! A TCP proxy on loopback that a test can cut and restore, to put one
//! client (a device plugin) out of the API server's reach while everything
//! else keeps talking to it. TLS passes through untouched.
//!
//! * [`Link::Open`]: bytes flow both ways.
//! * [`Link::Refused`]: every open connection is closed and new ones are
//!   closed as soon as they are accepted (what a client sees when the server
//!   or a firewall rejects it: an error at once).
//! * [`Link::Silent`]: every open connection is closed and new ones are
//!   accepted but never answered, not even after the link is open again (a
//!   partition that drops packets: the client learns nothing and must give
//!   up on its own timeout; only connections made after it heals work).

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The state of the proxied link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Open,
    Refused,
    Silent,
}

/// A running proxy; dropping it stops it and closes every connection.
#[derive(Debug)]
pub struct CuttableProxy {
    address: SocketAddr,
    link: watch::Sender<Link>,
    task: JoinHandle<()>,
}

impl CuttableProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let (link, watching) = watch::channel(Link::Open);
        let task = tokio::spawn(accept_loop(listener, upstream, watching));
        Ok(CuttableProxy {
            address,
            link,
            task,
        })
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `https://127.0.0.1:<port>`, for a client's server URL.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.address)
    }

    /// Changes the link; connections open under the old state are closed.
    pub fn set(&self, link: Link) {
        self.link.send_replace(link);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `host:port` of an `https://host:port` URL such as the harness's API server.
pub fn socket_address_of(url: &str) -> Option<SocketAddr> {
    url.strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?
        .trim_end_matches('/')
        .parse()
        .ok()
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, link: watch::Receiver<Link>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        let state = *link.borrow();
        match state {
            // Dropped at once: the client's handshake fails.
            Link::Refused => drop(inbound),
            // Held, unanswered, until the proxy stops.
            Link::Silent => {
                connections.spawn(async move {
                    std::future::pending::<()>().await;
                    drop(inbound);
                });
            }
            Link::Open => {
                let changed = link.clone();
                connections.spawn(forward(inbound, upstream, changed));
            }
        }
        // Reap finished connection tasks so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
}

/// Copies both ways until either side closes or the link changes.
async fn forward(mut inbound: TcpStream, upstream: SocketAddr, mut link: watch::Receiver<Link>) {
    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = link.wait_for(|l| *l != Link::Open) => {}
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An upstream that echoes what it reads.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buffer).await {
                        if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        address
    }

    async fn round_trip(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        stream.write_all(b"ping").await?;
        let mut buffer = [0u8; 4];
        stream.read_exact(&mut buffer).await?;
        Ok(buffer.to_vec())
    }

    #[tokio::test]
    #[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
    async fn forwards_while_open_closes_when_refused_and_holds_when_silent() {
        let proxy = CuttableProxy::start(echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.address()).await.unwrap();
        assert_eq!(round_trip(&mut open).await.unwrap(), b"ping");

        // Cut: the open connection ends, a new one is closed unanswered.
        proxy.set(Link::Refused);
        let mut buffer = [0u8; 4];
        assert_eq!(open.read(&mut buffer).await.unwrap_or(0), 0);
        let mut refused = TcpStream::connect(proxy.address()).await.unwrap();
        assert!(round_trip(&mut refused).await.is_err());

        // Silent: a new connection gets no answer, even once the link is back.
        proxy.set(Link::Silent);
        let mut silent = TcpStream::connect(proxy.address()).await.unwrap();
        silent.write_all(b"ping").await.unwrap();
        let pending = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            silent.read(&mut buffer),
        )
        .await;
        assert!(pending.is_err(), "a silent link answered: {pending:?}");

        proxy.set(Link::Open);
        let mut again = TcpStream::connect(proxy.address()).await.unwrap();
        assert_eq!(round_trip(&mut again).await.unwrap(), b"ping");
        assert_eq!(
            socket_address_of("https://127.0.0.1:6443"),
            Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 6443)))
        );
    }
}
