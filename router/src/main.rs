//! The `switchyard` binary.

/// mimalloc instead of glibc malloc: the ingest path allocates and frees many small objects per
/// event (maps, strings), where mimalloc is markedly cheaper, and it returns freed memory to the OS
/// instead of keeping per-thread arenas (see BENCHMARKS.md, "Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    switchyard_router::cli::main()
}
