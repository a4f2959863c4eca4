//! The binary's commands that need more than a line or two of `run`.

pub mod manage;
pub mod migrate;
