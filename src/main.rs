//! The `mirror` binary: parse arguments, run one command, map the outcome to an exit code.
//! All behaviour lives in the library (`src/lib.rs`) and the per-command modules in `cli/`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
