//! Unix sockets for kubelet's gRPC APIs: path checks, listening, dialling.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::{Channel, Endpoint, Uri};

/// `sun_path` holds 108 bytes including the terminating NUL.
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

#[derive(Debug, Error)]
pub enum SocketError {
    #[error(
        "socket path {path} is {len} bytes long; Unix sockets allow at most {MAX_SOCKET_PATH_BYTES} \
         (108 including the terminating NUL): choose a shorter device-plugin directory"
    )]
    PathTooLong { path: String, len: usize },
    #[error("socket path {path} is not valid: {why}")]
    InvalidPath { path: String, why: &'static str },
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot dial {path}: {source}")]
    Dial {
        path: String,
        source: tonic::transport::Error,
    },
}

/// Refuses paths the kernel would refuse, with a message that says why.
pub fn check_socket_path(path: &Path) -> Result<(), SocketError> {
    let bytes = path.as_os_str().len();
    if bytes == 0 {
        return Err(SocketError::InvalidPath {
            path: String::new(),
            why: "it is empty",
        });
    }
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(SocketError::InvalidPath {
            path: path.display().to_string(),
            why: "it contains a NUL byte",
        });
    }
    if bytes > MAX_SOCKET_PATH_BYTES {
        return Err(SocketError::PathTooLong {
            path: path.display().to_string(),
            len: bytes,
        });
    }
    Ok(())
}

/// Listens on `path`, replacing a stale socket file left by an earlier run.
pub fn listen(path: &Path) -> Result<UnixListener, SocketError> {
    check_socket_path(path)?;
    let bind_error = |source| SocketError::Bind {
        path: path.display().to_string(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_error(e)),
    }
    UnixListener::bind(path).map_err(bind_error)
}

/// A gRPC channel over the Unix socket at `path`. The connection is made now,
/// so a missing or dead socket is an error here rather than on the first call.
pub async fn dial(path: &Path) -> Result<Channel, SocketError> {
    check_socket_path(path)?;
    let target: PathBuf = path.to_owned();
    // The URI is required by the HTTP/2 layer but never resolved: the
    // connector below always dials the socket.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let target = target.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(target).await?)) }
        }))
        .await
        .map_err(|source| SocketError::Dial {
            path: path.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_are_refused_with_the_limit_named() {
        let ok = PathBuf::from(format!("/{}", "a".repeat(MAX_SOCKET_PATH_BYTES - 1)));
        assert!(check_socket_path(&ok).is_ok());
        let long = PathBuf::from(format!("/{}", "a".repeat(MAX_SOCKET_PATH_BYTES)));
        let err = check_socket_path(&long).unwrap_err().to_string();
        assert!(
            err.contains("108 bytes") || err.contains("108 including"),
            "{err}"
        );
        assert!(err.contains("is 108 bytes long"), "{err}");
        assert!(check_socket_path(Path::new("")).is_err());
    }
}
