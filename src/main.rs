//! The `tproxyd` binary: the library's builder with the built-in filters.

fn main() {
    tproxyd::Tproxyd::new().run()
}
