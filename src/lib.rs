//! The `leadq` operator binary as a library: command-line parsing and the commands.
//!
//! # Layout
//! - [`cli`]: subcommands `api`, `worker`, `migrate`, `tenant create`, `bench`.
//! - [`bench`]: the queue benchmark of `shared/bench-protocol.md`.

pub mod bench;
pub mod cli;
