//! The `procfwk` binary: parse the command line and hand over to the library.

fn main() -> anyhow::Result<()> {
    procfwk::cli::main()
}
