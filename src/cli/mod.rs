//! Everything `cronwarden` does as a command-line tool (placeholder map,
//! completed when main.rs is split).

pub(crate) mod client;
pub(crate) mod explain;
pub(crate) mod import;
pub(crate) mod lint;
pub(crate) mod render;
