//! The `tproxyd` binary: the library's builder with the built-in filters.

/// mimalloc: Pingora allocates and frees many small objects per request;
/// glibc's malloc spent a fifth of tproxyd's instructions on them
/// (callgrind, BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    tproxyd::Tproxyd::new().run()
}
