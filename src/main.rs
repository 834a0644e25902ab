//! The `procfwk` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    match procfwk::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain on one line; no backtrace for an outcome the user has to act on.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
