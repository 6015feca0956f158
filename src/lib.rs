//! The `leadq` operator binary as a library: command-line parsing and the commands.
//!
//! # Layout
//! - [`cli`]: subcommands `api`, `worker`, `migrate`, `tenant`, `key`, `lead`, `audit`,
//!   `dlq`, `queue`, `bench`; one file per command group under `cli/`.
//! - [`bench`](mod@bench): the queue benchmark of `docs/bench-protocol.md`.

pub mod bench;
pub mod cli;
