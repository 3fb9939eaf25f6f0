//! Queues: teams sharing one cluster (issue 17's pure core).
//!
//! [`QueueTree`] is the hierarchy as written, checked whole (no cycles, limits
//! at or above guarantees, children's guarantees backed by their parent's).
//! [`fair_shares`] divides the cluster among the queues, resource by resource:
//! guarantees first, then what is idle by over-quota weight, never beyond a
//! limit or a demand. [`dominant_share_ratio`] orders queues for their turns.
//! [`QueueLedger`] keeps each queue's usage and waiting demand current and
//! answers the limit, turn and reclaim questions from them.
//! Nothing here reads Kubernetes objects: the scheduler translates `Queue`
//! objects and pods into these types, and the simulator builds them directly.

mod fair_share;
mod ledger;
mod tree;

pub use fair_share::{dominant_share_ratio, fair_shares, ResourceAmounts};
pub use ledger::{sum_amounts, OverLimit, QueueLedger, TurnKey};
pub use tree::{QueueId, QueueResource, QueueSpec, QueueTree, QueueTreeError, Quota};
