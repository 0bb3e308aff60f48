//! The `switchyard` binary.

fn main() -> std::process::ExitCode {
    switchyard_router::cli::main()
}
