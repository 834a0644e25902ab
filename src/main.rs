//! The `procfwk` binary: the command line and the developer tooling ([`cli`]: `serve`, `db`, `sim`, `demo`,
//! `run`, `bench`, `package`) on top of the library the handler is made of. This is the binary edge:
//! errors become `anyhow` here and nowhere else.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain on one line; no backtrace for an outcome the user has to act on.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
