//! The common language of task-sharding's coordinator and clients.
//!
//! - [`schema`]: a named list of tasks (the YAML form of the original project), its validation and
//!   its digest.
//! - [`protocol`]: the versioned messages.
//! - [`frame`]: how messages are framed on a stream, with a hard size limit.
//! - [`log_tail`]: the bounded tail of a failing task's log that travels with its result.
//!
//! Nothing here does I/O, so all of it is tested with plain bytes.
#![warn(missing_docs, unreachable_pub)]

pub mod frame;
pub mod log_tail;
pub mod protocol;
pub mod schema;

pub use frame::{
    encode_frame, FrameBudget, FrameError, MessageCodec, DEFAULT_MAX_FRAME_LEN,
    PRE_HELLO_MAX_FRAME_LEN,
};
pub use protocol::*;
pub use schema::{Schema, SchemaDigest, SchemaError, Task};
