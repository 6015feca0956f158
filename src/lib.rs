//! The `leadq` operator binary as a library: command-line parsing and the commands.
//!
//! # Layout
//! - [`cli`]: subcommands `api`, `worker`, `migrate`, `tenant`, `key`, `lead`, `audit`,
//!   `dlq`, `queue`, `bench`.
//! - [`dlq_cli`]: `leadq dlq list|show|redrive|purge`.
//! - [`queue_cli`]: `leadq queue tenant <slug> <kind> show|pause|resume|cap|uncap|weight`.
//! - [`bench`]: the queue benchmark of `shared/bench-protocol.md`.

pub mod bench;
pub mod cli;
pub mod dlq_cli;
pub mod queue_cli;
