use thiserror::Error;

/// Errors from building or mutating a snapshot. Each names what was wrong so that a
/// controller can turn it into an Event and a simulator into a message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EngineError {
    #[error("node {node}: {reason}")]
    InvalidNode { node: String, reason: String },
    #[error("pod {pod}: {reason}")]
    InvalidPod { pod: String, reason: String },
    #[error("{selector}: {reason}")]
    InvalidSelector { selector: String, reason: String },
    #[error("more than {max} distinct GPU models; the engine tracks models in a {max}-bit set")]
    TooManyModels { max: usize },
    #[error("node index {0} is not in the snapshot")]
    UnknownNode(usize),
    #[error("placement on node {node} does not fit: {reason}")]
    DoesNotFit { node: String, reason: String },
    #[error("release on node {node} would free more than was allocated: {reason}")]
    ReleaseUnderflow { node: String, reason: String },
}
