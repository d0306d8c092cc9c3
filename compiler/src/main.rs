//! The `pipec` command.

fn main() -> std::process::ExitCode {
    pipec::cli::main()
}
