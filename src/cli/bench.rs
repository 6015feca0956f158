//! `leadq bench`: the process around the benchmark of [`crate::bench`]: the runtime it asks
//! for, and warnings-only JSON logs on stderr (stdout carries its one JSON line only).

use std::process::ExitCode;

use leadq_platform::config::LogFormat;
use leadq_platform::telemetry;
use tokio::runtime::{Builder, Runtime};

use super::exit_code;
use crate::bench::{BenchArgs, BenchRuntime};

/// The runtime `--runtime` asks for (not yet built).
pub(super) fn runtime(args: &BenchArgs) -> Builder {
    match args.runtime() {
        BenchRuntime::CurrentThread => Builder::new_current_thread(),
        BenchRuntime::MultiThread => Builder::new_multi_thread(),
    }
}

/// Runs `leadq bench`.
pub(super) fn run(runtime: &Runtime, args: BenchArgs) -> ExitCode {
    telemetry::init_logs("warn", LogFormat::Json);
    exit_code(runtime.block_on(crate::bench::run(args)))
}
