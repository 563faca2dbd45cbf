//! Addresses as types. A flow has three socket addresses that matter and
//! all are `SocketAddr` to the kernel: the client's, the one the client was
//! going to (the original destination), and the listener's own. Each has a
//! type of its own here, so a client cannot be passed where a destination
//! is meant. All are canonical: v4-mapped v6 addresses (`::ffff:a.b.c.d`,
//! which a dual-stack `[::]` listener reports for v4 peers) are stored as
//! plain v4.
//!
//! [`parse`] holds the text parsers: `host[:port]`, CIDRs, and whether an
//! address is local to this host.
//!
//! Bottom layer: imports nothing from the crate.

mod name;
mod parse;

pub use name::{flow_name, is_localhost, normalise_name, MAX_NAME};
pub use parse::{
    host_name, host_port, is_local_destination, is_local_ip, parse_net, split_host_port,
};
use std::net::{IpAddr, SocketAddr};

/// Canonicalises v4-mapped v6 addresses (`::ffff:a.b.c.d`), which a
/// dual-stack `[::]` listener reports for v4 clients.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

macro_rules! socket_addr_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(SocketAddr);

        impl $name {
            /// The address, canonicalised.
            pub fn new(addr: SocketAddr) -> Self {
                $name(canonical(addr))
            }

            /// Its IP address.
            pub fn ip(&self) -> IpAddr {
                self.0.ip()
            }

            /// Its port.
            pub fn port(&self) -> u16 {
                self.0.port()
            }

            /// The plain socket address.
            pub fn socket_addr(&self) -> SocketAddr {
                self.0
            }
        }

        impl From<SocketAddr> for $name {
            fn from(addr: SocketAddr) -> Self {
                $name::new(addr)
            }
        }

        impl From<$name> for SocketAddr {
            fn from(addr: $name) -> SocketAddr {
                addr.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::net::AddrParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse::<SocketAddr>().map($name::new)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

socket_addr_type!(
    /// The client's end of a flow: the peer of an accepted connection.
    ClientAddr
);

socket_addr_type!(
    /// Where a flow was going: the address the client dialed (the accepted
    /// socket's local address under TPROXY, `SO_ORIGINAL_DST` under
    /// REDIRECT), or on a forward listener the address its request named.
    OrigDstAddr
);

socket_addr_type!(
    /// A listening socket's address, as configured.
    ListenAddr
);

impl ClientAddr {
    /// Stands in for a client whose address the kernel did not report
    /// (never seen on TCP): `0.0.0.0:0`, which matches no client rule.
    pub const UNKNOWN: ClientAddr = ClientAddr(SocketAddr::new(
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        0,
    ));
}

/// The two ends of an accepted connection as tproxyd sees them, looked up
/// once per connection: its client, and (on transparent listeners) the
/// original destination; `None` where the kernel could not tell (a
/// redirect listener dialed directly has no original destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Peers {
    /// The client.
    pub client: Option<ClientAddr>,
    /// Where it was going, on transparent listeners.
    pub dst: Option<OrigDstAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalises_v4_mapped() {
        let a: SocketAddr = "[::ffff:192.0.2.7]:80".parse().unwrap();
        assert_eq!(canonical(a), "192.0.2.7:80".parse().unwrap());
        let b: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
        assert_eq!(canonical(b), b);
        let c = ClientAddr::new(a);
        assert_eq!(c.to_string(), "192.0.2.7:80");
        assert_eq!(
            OrigDstAddr::from(a).ip(),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }
}
