//! The `ecointegra` binary: the command line over the node library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
