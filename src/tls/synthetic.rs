//! Synthetic ClientHellos: minimal, valid, built by hand, for tests, fuzz
//! seeds and benchmarks (not used by the proxy itself).

/// A ClientHello with SNI `sni` (none if `None`), ALPN h2+http/1.1 and
/// supported_versions 1.3/1.2, in one record.
pub fn client_hello(sni: Option<&str>) -> Vec<u8> {
    client_hello_with(sni, &[])
}

/// The same with `extra` extension bytes (type, length, data) appended.
pub fn client_hello_with(sni: Option<&str>, extra: &[u8]) -> Vec<u8> {
    let mut ext = Vec::new();
    if let Some(name) = sni {
        let n = name.as_bytes();
        let list_len = 3 + n.len();
        ext.extend_from_slice(&[0x00, 0x00]);
        ext.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
        ext.extend_from_slice(&(list_len as u16).to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&(n.len() as u16).to_be_bytes());
        ext.extend_from_slice(n);
    }
    // ALPN
    let protos: &[&[u8]] = &[b"h2", b"http/1.1"];
    let plen: usize = protos.iter().map(|p| p.len() + 1).sum();
    ext.extend_from_slice(&[0x00, 0x10]);
    ext.extend_from_slice(&((plen + 2) as u16).to_be_bytes());
    ext.extend_from_slice(&(plen as u16).to_be_bytes());
    for p in protos {
        ext.push(p.len() as u8);
        ext.extend_from_slice(p);
    }
    // supported_versions: 1.3, 1.2
    ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x05, 0x04, 0x03, 0x04, 0x03, 0x03]);
    ext.extend_from_slice(extra);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]);
    body.extend_from_slice(&[0x01, 0x00]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    records(&hs, 16384)
}

/// Frames a handshake message into TLS records of at most `max` bytes.
pub fn records(hs: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in hs.chunks(max) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// One extension: type, length, data.
pub fn extension(t: u16, data: &[u8]) -> Vec<u8> {
    let mut e = t.to_be_bytes().to_vec();
    e.extend_from_slice(&(data.len() as u16).to_be_bytes());
    e.extend_from_slice(data);
    e
}

/// A key_share with an X25519MLKEM768 share (1216 bytes) and an X25519
/// one, as current browsers send, and padding: the hello is then about
/// 1.9 KB, more than one TCP segment.
pub fn post_quantum_key_share() -> Vec<u8> {
    let mut shares = Vec::new();
    for (group, len) in [(0x11ecu16, 1216usize), (0x001d, 32)] {
        shares.extend_from_slice(&group.to_be_bytes());
        shares.extend_from_slice(&(len as u16).to_be_bytes());
        shares.extend(std::iter::repeat_n(0x42u8, len));
    }
    let mut data = (shares.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&shares);
    let mut ext = extension(0x0033, &data);
    ext.extend_from_slice(&extension(0x0015, &[0; 500]));
    ext
}
