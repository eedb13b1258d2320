//! The exit codes of `task-sharding run`. (`task-sharding bazel` exits with Bazel's own codes.)

/// Every task of the session succeeded.
pub(crate) const SUCCESS: u8 = 0;
/// Some task of the session failed.
pub(crate) const FAILED: u8 = 1;
/// The command line or the schema was wrong.
pub(crate) const USAGE: u8 = 2;
/// The coordinator could not be used: unreachable, refused the client, or lost.
pub(crate) const COORDINATOR: u8 = 3;
/// Stopped by SIGINT or SIGTERM.
pub(crate) const INTERRUPTED: u8 = 130;
