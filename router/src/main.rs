//! The `switchyard` binary.

switchyard_router::switchyard_allocator!();

fn main() -> std::process::ExitCode {
    switchyard_router::cli::main()
}
