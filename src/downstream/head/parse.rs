//! One parse of a whole request head, with Pingora's parser and header
//! bound: where the head ends, and what Pingora would do with it. Pingora
//! answers a head it cannot parse (400) and a CONNECT (405) itself, before
//! any hook runs and naming itself in `Server:`; tproxyd's own answers
//! name no server, so these heads are told apart here first.

/// What kind of request a head is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// A request Pingora takes (or at least tries: see [`parse_head`]).
    Request,
    /// `CONNECT host:port`: a forward listener's tunnel, refused elsewhere.
    Connect,
}

/// What one parse found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// Where the head ends, when the parser could say: the whole head is
    /// there and it parsed. No end when more bytes are needed or the
    /// verdict waits for the whole head; the incremental scan then finds
    /// it. Where the parser finds an end, the scan finds the same.
    pub end: Option<usize>,
    /// Its kind; `None` for a head Pingora would refuse as malformed.
    pub kind: Option<HeadKind>,
}

/// Parses `head` as Pingora does. Uninitialised header slots: this runs
/// for every request, and 256 zeroed headers would be 8 KiB written each
/// time.
pub fn parse_head(head: &[u8]) -> Parsed {
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 256];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut headers) {
        Ok(status) => Parsed {
            end: match status {
                httparse::Status::Complete(end) => Some(end),
                httparse::Status::Partial => None,
            },
            kind: Some(if req.method == Some("CONNECT") {
                HeadKind::Connect
            } else {
                HeadKind::Request
            }),
        },
        // Pingora retries these with the target escaped: its call.
        Err(httparse::Error::Token | httparse::Error::Version) => Parsed {
            end: None,
            kind: Some(HeadKind::Request),
        },
        Err(_) => Parsed {
            end: None,
            kind: None,
        },
    }
}
