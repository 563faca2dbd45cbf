//! The relay on in-memory streams (copy) and on real loopback sockets
//! (splice): exact counts, half-close, idle timeout, buffered bytes.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A connected loopback pair: (our end, the peer's end).
async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    (s, c)
}

/// Deterministic bytes that show any loss, duplication or reordering.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

#[test]
fn relays_both_ways_with_half_close_and_counts_exactly() {
    rt().block_on(async {
        let (mut client, mut a) = tokio::io::duplex(64);
        let (mut b, mut origin) = tokio::io::duplex(64);
        let relay = tokio::spawn(async move {
            relay(&mut a, &mut b, Duration::from_secs(5), RelayKind::Splice).await
        });
        client.write_all(&[7u8; 1000]).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        origin.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, vec![7u8; 1000]);
        origin.write_all(b"reply").await.unwrap();
        origin.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"reply");
        let r = relay.await.unwrap();
        // In-memory streams cannot be spliced.
        let kind = RelayKind::Copy;
        assert_eq!(
            r,
            Relayed {
                up: 1000,
                down: 5,
                idle: false,
                kind
            }
        );
    });
}

#[test]
fn a_silent_pair_is_ended_by_the_idle_timeout_with_its_counts() {
    rt().block_on(async {
        let (mut client, mut a) = tokio::io::duplex(64);
        let (mut b, mut origin) = tokio::io::duplex(64);
        client.write_all(b"hello").await.unwrap();
        let r = relay(&mut a, &mut b, Duration::from_millis(200), RelayKind::Copy).await;
        let kind = RelayKind::Copy;
        assert_eq!(
            r,
            Relayed {
                up: 5,
                down: 0,
                idle: true,
                kind
            }
        );
        let mut got = [0u8; 5];
        origin.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
    });
}

/// Sends `up` from the client and `down` from the origin at the same
/// time, the client half-closing first; checks what arrived.
async fn exchange(prefer: RelayKind, up: Vec<u8>, down: Vec<u8>) -> Relayed {
    let (mut a, mut client) = pair().await;
    let (mut b, mut origin) = pair().await;
    let relay =
        tokio::spawn(async move { relay(&mut a, &mut b, Duration::from_secs(10), prefer).await });
    let (up2, down2) = (up.clone(), down.clone());
    let c = tokio::spawn(async move {
        let (mut r, mut w) = client.split();
        let send = async {
            w.write_all(&up2).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        tokio::join!(send, async { r.read_to_end(&mut got).await.unwrap() });
        got
    });
    let o = tokio::spawn(async move {
        let mut got = Vec::new();
        origin.read_to_end(&mut got).await.unwrap();
        // Half-closed by the client, the origin still answers.
        origin.write_all(&down2).await.unwrap();
        origin.shutdown().await.unwrap();
        got
    });
    let (at_client, at_origin) = (c.await.unwrap(), o.await.unwrap());
    assert!(at_origin == up, "client → origin bytes differ");
    assert!(at_client == down, "origin → client bytes differ");
    relay.await.unwrap()
}

#[test]
fn sockets_are_spliced_exactly_with_half_close() {
    rt().block_on(async {
        let (up, down) = (pattern(5 << 20, 1), pattern(3 << 20, 2));
        let r = exchange(RelayKind::Splice, up, down).await;
        let kind = RelayKind::Splice;
        assert_eq!(
            r,
            Relayed {
                up: 5 << 20,
                down: 3 << 20,
                idle: false,
                kind
            }
        );
    });
}

#[test]
fn copy_is_used_when_configured() {
    rt().block_on(async {
        let r = exchange(RelayKind::Copy, pattern(100_000, 3), pattern(7, 4)).await;
        let kind = RelayKind::Copy;
        assert_eq!(
            r,
            Relayed {
                up: 100_000,
                down: 7,
                idle: false,
                kind
            }
        );
    });
}

#[test]
fn a_spliced_silent_pair_is_ended_by_the_idle_timeout_with_its_counts() {
    rt().block_on(async {
        let (mut a, mut client) = pair().await;
        let (mut b, mut origin) = pair().await;
        client.write_all(b"hello").await.unwrap();
        let r = relay(
            &mut a,
            &mut b,
            Duration::from_millis(200),
            RelayKind::Splice,
        )
        .await;
        let kind = RelayKind::Splice;
        assert_eq!(
            r,
            Relayed {
                up: 5,
                down: 0,
                idle: true,
                kind
            }
        );
        let mut got = [0u8; 5];
        origin.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
    });
}

#[test]
fn bytes_buffered_in_a_pingora_stream_go_first() {
    rt().block_on(async {
        let (a, mut client) = pair().await;
        let (mut b, mut origin) = pair().await;
        // As after the ClientHello peek: bytes read and put back.
        let mut a = L4Stream::from(a);
        a.rewind(b"early ");
        client.write_all(b"late").await.unwrap();
        client.shutdown().await.unwrap();
        let relay = tokio::spawn(async move {
            relay(&mut a, &mut b, Duration::from_secs(5), RelayKind::Splice).await
        });
        let mut got = Vec::new();
        origin.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"early late");
        origin.shutdown().await.unwrap();
        let r = relay.await.unwrap();
        let kind = RelayKind::Splice;
        assert_eq!(
            r,
            Relayed {
                up: 10,
                down: 0,
                idle: false,
                kind
            }
        );
    });
}

#[test]
fn a_reset_ends_a_spliced_relay() {
    rt().block_on(async {
        let (mut a, client) = pair().await;
        let (mut b, mut origin) = pair().await;
        let relay = tokio::spawn(async move {
            relay(&mut a, &mut b, Duration::from_secs(5), RelayKind::Splice).await
        });
        // The origin sends more than the client will ever read, then the
        // client resets.
        let flood = tokio::spawn(async move {
            let chunk = vec![9u8; 64 * 1024];
            while origin.write_all(&chunk).await.is_ok() {}
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        let r = tokio::time::timeout(Duration::from_secs(5), relay)
            .await
            .unwrap()
            .unwrap();
        assert!(!r.idle && r.kind == RelayKind::Splice, "{r:?}");
        flood.abort();
    });
}

#[test]
fn the_descriptor_budget_of_splicing() {
    // Plenty of descriptors: every connection may splice (two pipes each).
    assert_eq!(pipe_limit(1_047_000, 10_000), 20_000);
    assert_eq!(fd_budget(20_000), 40_000);
    // Few: splicing takes at most a quarter of them.
    assert_eq!(pipe_limit(900, 10_000), 112);
    assert!(fd_budget(pipe_limit(900, 10_000)) <= 225);
    assert_eq!(pipe_limit(0, 10), 0);
}
