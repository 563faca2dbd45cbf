//! Fuzzes the ClientHello peek (framing, reassembly, tls-parser) with
//! arbitrary first bytes of a connection. Run with a nightly toolchain:
//! `cargo +nightly fuzz run client_hello -- -max_total_time=60`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tproxyd::tls::peek_client_hello(data);
});
