//! The switchyard command line, as a binary of the test crate so end-to-end tests can spawn it.

fn main() -> std::process::ExitCode {
    switchyard_router::cli::main()
}
