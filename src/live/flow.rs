//! One open flow as the status page sees it: what is known of it so far,
//! in a bounded number of bytes, updated in place by its connection's task
//! while the admin listener reads it.

use super::hitters::{Batch, Pending};
use crate::addr::{host_name, ClientAddr, OrigDstAddr};
use crate::flow::{FlowKind, RequestId};
use crate::relay::Counts;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The longest host or SNI kept (a DNS name is at most 253 bytes).
const MAX_HOST: usize = 253;
/// The longest rule name kept.
const MAX_RULE: usize = 128;

/// Where a flow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowState {
    /// Reading a request head, a ClientHello or a tunnel's first bytes;
    /// on a keep-alive connection, also waiting for its next request.
    ReadingHead,
    /// Decided and sent on; waiting for the origin (connect, response).
    WaitingUpstream,
    /// Bytes flow: a response, or a tunnel's relay.
    Relaying,
}

impl FlowState {
    const ALL: [FlowState; 3] = [
        FlowState::ReadingHead,
        FlowState::WaitingUpstream,
        FlowState::Relaying,
    ];

    /// The name in the flows API.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowState::ReadingHead => "reading-head",
            FlowState::WaitingUpstream => "waiting-upstream",
            FlowState::Relaying => "relaying",
        }
    }
}

const KINDS: [FlowKind; 5] = [
    FlowKind::Http,
    FlowKind::Forward,
    FlowKind::Connect,
    FlowKind::Passthrough,
    FlowKind::Tunnel,
];

fn kind_index(kind: FlowKind) -> u8 {
    KINDS.iter().position(|k| *k == kind).unwrap_or(0) as u8
}

/// A flow's decision as the live table takes it.
#[derive(Debug, Clone, Copy)]
pub struct Verdict<'a> {
    /// The kind of flow it turned out to be.
    pub kind: FlowKind,
    /// The name it asked for, if any: normalised, or as given (a Host
    /// header with its port and case is normalised here).
    pub name: Option<&'a str>,
    /// Whether it may go on.
    pub allowed: bool,
    /// Where it goes, when known (a parent proxy may resolve the name).
    pub dst: Option<OrigDstAddr>,
    /// What decided, e.g. `acl:deny:ads`.
    pub rule: Option<&'a str>,
    /// The egress it leaves by, when allowed.
    pub egress: Option<&'a Arc<str>>,
}

/// What a flow's decision said, as the live table keeps it.
#[derive(Debug, Default)]
struct Decided {
    dst: Option<OrigDstAddr>,
    host: Option<Arc<str>>,
    /// The name as the flow gave it (a Host header, with its port), from
    /// which `host` was made.
    given: String,
    /// `host` is the current request's (it was decided since it began).
    current: bool,
    rule: String,
    egress: Option<Arc<str>>,
    /// Finished requests not yet in the top lists.
    pending: Pending,
}

/// One open flow: on HTTP listeners the client connection (its requests
/// one after another), else the passthrough connection or tunnel.
#[derive(Debug)]
pub struct LiveFlow {
    listener: Arc<str>,
    client: Option<ClientAddr>,
    started: SystemTime,
    id: AtomicU64,
    requests: AtomicU64,
    kind: AtomicU8,
    state: AtomicU8,
    counts: Counts,
    decided: Mutex<Decided>,
}

/// A flow as the flows API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct FlowView {
    /// The current (or last) request's id, as in the access log.
    pub id: String,
    /// The listener's name.
    pub listener: Arc<str>,
    /// `http`, `forward`, `connect`, `passthrough` or `tunnel`.
    pub kind: &'static str,
    /// The client's address.
    pub client: Option<String>,
    /// The original (or resolved) destination, once known.
    pub destination: Option<String>,
    /// Host header, CONNECT authority or SNI, once known.
    pub host: Option<Arc<str>>,
    /// The egress it leaves by; `direct` when none is configured.
    pub egress: Arc<str>,
    /// What decided, e.g. `acl:allow:lan`.
    pub rule: Option<String>,
    /// When it opened (RFC 3339, UTC).
    pub started: String,
    /// Seconds since it opened.
    pub age_seconds: f64,
    /// Bytes from the client (bodies, tunnel bytes).
    pub bytes_up: u64,
    /// Bytes to the client.
    pub bytes_down: u64,
    /// Requests seen on it so far (HTTP listeners; 1 for other flows).
    pub requests: u64,
    /// `reading-head`, `waiting-upstream` or `relaying`.
    pub state: &'static str,
}

/// Keeps at most `max` bytes of `s`, cut at a character boundary.
fn bounded(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl LiveFlow {
    /// A flow of `kind` (as far as its listener tells) from `client`,
    /// opened now.
    pub fn new(listener: Arc<str>, kind: FlowKind, client: Option<ClientAddr>) -> LiveFlow {
        LiveFlow {
            listener,
            client,
            started: SystemTime::now(),
            id: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            kind: AtomicU8::new(kind_index(kind)),
            state: AtomicU8::new(0),
            counts: Counts::default(),
            decided: Mutex::new(Decided::default()),
        }
    }

    /// The bytes moved so far, shared with the relay.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Its client.
    pub fn client(&self) -> Option<ClientAddr> {
        self.client
    }

    /// The kind of flow, as last decided.
    pub fn kind(&self) -> FlowKind {
        KINDS[usize::from(self.kind.load(Ordering::Relaxed)) % KINDS.len()]
    }

    /// Moves it to `state`.
    pub fn set_state(&self, state: FlowState) {
        let i = FlowState::ALL.iter().position(|s| *s == state).unwrap_or(0);
        self.state.store(i as u8, Ordering::Relaxed);
    }

    fn state(&self) -> FlowState {
        FlowState::ALL[usize::from(self.state.load(Ordering::Relaxed)) % FlowState::ALL.len()]
    }

    /// A request (or the flow's one summary) began: `id` is shown from
    /// now; the last request's name stays on show, but is not this one's
    /// until decided again.
    pub fn request_started(&self, id: RequestId) {
        self.id.store(id.0, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut d = self.decided.lock().unwrap_or_else(|e| e.into_inner());
        d.current = false;
    }

    /// The flow was decided. Names and rules are cut to a bounded length.
    pub fn decided(&self, v: &Verdict<'_>) {
        self.kind.store(kind_index(v.kind), Ordering::Relaxed);
        if v.allowed {
            self.set_state(FlowState::WaitingUpstream);
        }
        let mut d = self.decided.lock().unwrap_or_else(|e| e.into_inner());
        if v.dst.is_some() {
            d.dst = v.dst;
        }
        if let Some(e) = v.egress {
            if d.egress.as_ref() != Some(e) {
                d.egress = Some(e.clone());
            }
        }
        // A keep-alive connection asks for the same name again and again:
        // normalised (and allocated) only when it changes.
        match v.name.map(|n| bounded(n, MAX_HOST)) {
            Some(given) if given == d.given && d.host.is_some() => {}
            Some(given) => {
                d.given.clear();
                d.given.push_str(given);
                d.host = Some(Arc::from(bounded(&host_name(given), MAX_HOST)));
            }
            None => d.host = None,
        }
        d.current = true;
        d.rule.clear();
        d.rule
            .push_str(bounded(v.rule.unwrap_or_default(), MAX_RULE));
    }

    /// The current request finished, with `bytes` to `dst`, in `second`:
    /// into the flow's batch. Returns the batch before it when it had to
    /// go first (to be recorded).
    pub fn count(&self, dst: Option<SocketAddr>, bytes: u64, second: u64) -> Option<Batch> {
        let mut d = self.decided.lock().unwrap_or_else(|e| e.into_inner());
        let Decided {
            host,
            current,
            pending,
            ..
        } = &mut *d;
        let name = host.as_ref().filter(|_| *current);
        pending.add(self.client.map(|c| c.ip()), name, dst, bytes, second)
    }

    /// Its batch, if begun before `second` (any batch, with `None`).
    pub fn take_batch(&self, before: Option<u64>) -> Option<Batch> {
        let mut d = self.decided.lock().unwrap_or_else(|e| e.into_inner());
        d.pending.take(self.client.map(|c| c.ip()), before)
    }

    /// The last name it asked for, as shown.
    pub fn host(&self) -> Option<Arc<str>> {
        let d = self.decided.lock().unwrap_or_else(|e| e.into_inner());
        d.host.clone()
    }

    /// Bytes moved so far, both ways.
    pub fn bytes(&self) -> u64 {
        let up = self.counts.up.load(Ordering::Relaxed);
        up.saturating_add(self.counts.down.load(Ordering::Relaxed))
    }

    /// When it opened, in milliseconds since the Unix epoch.
    pub fn started_ms(&self) -> u64 {
        self.started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// The flow as listed now.
    pub fn view(&self) -> FlowView {
        let (dst, host, rule, egress) = {
            let d = self.decided.lock().unwrap_or_else(|e| e.into_inner());
            let rule = (!d.rule.is_empty()).then(|| d.rule.clone());
            (d.dst, d.host.clone(), rule, d.egress.clone())
        };
        let age = SystemTime::now()
            .duration_since(self.started)
            .unwrap_or_default();
        FlowView {
            id: RequestId(self.id.load(Ordering::Relaxed)).to_string(),
            listener: self.listener.clone(),
            kind: self.kind().as_str(),
            client: self.client.map(|c| c.to_string()),
            destination: dst.map(|d| d.to_string()),
            host,
            egress: egress.unwrap_or_else(|| Arc::from("direct")),
            rule,
            started: humantime::format_rfc3339_millis(self.started).to_string(),
            age_seconds: (age.as_secs_f64() * 10.0).round() / 10.0,
            bytes_up: self.counts.up.load(Ordering::Relaxed),
            bytes_down: self.counts.down.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            state: self.state().as_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_rules_are_bounded_at_char_boundaries() {
        let f = LiveFlow::new("lan".into(), FlowKind::Http, None);
        let long = "é".repeat(300);
        let rule = "r".repeat(500);
        f.decided(&Verdict {
            kind: FlowKind::Connect,
            name: Some(&long),
            allowed: false,
            dst: None,
            rule: Some(&rule),
            egress: None,
        });
        let v = f.view();
        assert!(v.host.as_deref().unwrap().len() <= MAX_HOST);
        assert_eq!(v.rule.unwrap().len(), MAX_RULE);
        assert_eq!(v.kind, "connect");
        assert_eq!(v.egress.as_ref(), "direct");
        assert_eq!(v.state, "reading-head");
    }

    #[test]
    fn a_flow_is_small() {
        // The table's share per open flow: the Arc'd flow and its slab slot
        // (the host name, when there is one, is shared with the sketches).
        let bytes = std::mem::size_of::<LiveFlow>() + 2 * std::mem::size_of::<usize>();
        println!("live flow: {bytes} bytes");
        assert!(bytes <= 320, "{bytes}");
    }

    #[test]
    fn a_decision_with_a_destination_waits_for_upstream() {
        let f = LiveFlow::new("lan".into(), FlowKind::Http, None);
        let dst = OrigDstAddr::new("198.51.100.10:80".parse().unwrap());
        f.request_started(RequestId(0xab));
        let wan2: Arc<str> = Arc::from("wan2");
        f.decided(&Verdict {
            kind: FlowKind::Http,
            name: Some("a.test"),
            allowed: true,
            dst: Some(dst),
            rule: None,
            egress: Some(&wan2),
        });
        let v = f.view();
        assert_eq!(v.state, "waiting-upstream");
        assert_eq!(v.destination.as_deref(), Some("198.51.100.10:80"));
        assert_eq!(v.id, "00000000000000ab");
        assert_eq!((v.requests, v.rule), (1, None));
        assert_eq!(v.egress.as_ref(), "wan2");
        // A Host header as it came: normalised for show and for the top
        // lists, once.
        f.request_started(RequestId(0xac));
        // Not decided: counted without a name.
        assert_eq!(f.count(None, 1, 0), None);
        f.decided(&Verdict {
            kind: FlowKind::Http,
            name: Some("WWW.Example.COM:8080"),
            allowed: true,
            dst: None,
            rule: None,
            egress: None,
        });
        let unnamed = f.count(None, 5, 0).expect("another name: a new batch");
        assert_eq!((unnamed.name, unnamed.flows), (None, 1));
        let b = f.take_batch(None).unwrap();
        assert_eq!(b.name.as_deref(), Some("www.example.com"));
        assert_eq!((b.flows, b.bytes), (1, 5));
        assert_eq!(f.take_batch(None), None);
    }
}
