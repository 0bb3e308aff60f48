//! The switchyard command line, as a binary of the test crate so end-to-end tests can spawn it.

// The production binary's allocator and settings, so the tests run what users run.
switchyard_router::switchyard_allocator!();

fn main() -> std::process::ExitCode {
    switchyard_router::cli::main()
}
