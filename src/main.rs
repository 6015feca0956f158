//! `leadq`: the one operator binary. Everything it does lives in the `leadq` library.

fn main() -> std::process::ExitCode {
    leadq::cli::main()
}
