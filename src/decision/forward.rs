//! The policy of a `mode: forward` listener, which resolves names and
//! connects wherever a client asks, so it must **never be an open proxy**:
//! clients must match `allow_clients` (default: nobody), CONNECT is limited
//! to `connect_ports` (default 443), and destinations on this host,
//! loopback, link-local or unspecified addresses are refused unless
//! `allow_local_destinations`.

use crate::addr::{is_local_destination, parse_net, ClientAddr};
use crate::error::{invalid, ConfigError};
use crate::flow::{Answer, Refusal};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The forward-proxy keys of a listener, as written there
/// (`tproxyd.listeners[i].allow_clients` …; they live in the listener's
/// settings, which refuse them on other modes).
#[derive(Debug, Clone, Copy, Default)]
pub struct ForwardKeys<'a> {
    /// Client CIDRs allowed to use the proxy (default none).
    pub allow_clients: Option<&'a [String]>,
    /// Ports CONNECT may reach (default `[443]`).
    pub connect_ports: Option<&'a [u16]>,
    /// Allow loopback / link-local / own addresses (default no).
    pub allow_local_destinations: Option<bool>,
}

impl ForwardKeys<'_> {
    /// Validates the listener at dotted path `key`; names are resolved
    /// within `resolve_timeout` (`tproxyd.upstream.resolve_timeout`).
    pub fn validate(
        self,
        key: &str,
        resolve_timeout: Duration,
    ) -> Result<ForwardPolicy, ConfigError> {
        let allow_clients = self
            .allow_clients
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(j, c)| parse_net(c).map_err(|r| invalid(format!("{key}.allow_clients[{j}]"), r)))
            .collect::<Result<Vec<_>, _>>()?;
        let connect_ports = self
            .connect_ports
            .map_or_else(|| vec![443], <[u16]>::to_vec);
        if connect_ports.contains(&0) {
            return Err(invalid(
                format!("{key}.connect_ports"),
                "port 0 is not a port",
            ));
        }
        Ok(ForwardPolicy {
            allow_clients,
            connect_ports,
            allow_local_destinations: self.allow_local_destinations.unwrap_or(false),
            resolve_timeout,
        })
    }
}

/// The validated forward-proxy policy of one listener.
#[derive(Debug, Clone)]
pub struct ForwardPolicy {
    /// Clients allowed to use the proxy.
    pub allow_clients: Vec<IpNet>,
    /// Ports CONNECT may reach.
    pub connect_ports: Vec<u16>,
    /// Whether loopback / link-local / this host's addresses may be reached.
    pub allow_local_destinations: bool,
    /// Bound on resolving a destination name.
    pub resolve_timeout: Duration,
}

impl ForwardPolicy {
    /// Whether `client` may use this forward proxy at all. Checked before
    /// anything is resolved, so strangers cost no DNS lookup.
    pub fn client_allowed(&self, client: Option<ClientAddr>) -> bool {
        client.is_some_and(|c| self.allow_clients.iter().any(|n| n.contains(&c.ip())))
    }

    /// The 403 for a client that may not use the proxy.
    pub fn client_refused(client: Option<ClientAddr>) -> Answer {
        let who = client.map_or("-".to_string(), |c| c.ip().to_string());
        Answer::refused(
            Refusal::ForwardNotAllowed,
            403,
            format!("403 Forbidden: client {who} may not use this proxy\n"),
        )
    }

    /// The 403 for a CONNECT port outside `connect_ports`, if it is.
    pub fn check_connect_port(&self, port: u16) -> Result<(), Answer> {
        if self.connect_ports.contains(&port) {
            return Ok(());
        }
        Err(Answer::refused(
            Refusal::ForwardNotAllowed,
            403,
            format!("403 Forbidden: CONNECT to port {port} is not allowed\n"),
        ))
    }

    /// The 403 when any of `addrs` is local (a name mixing public and local
    /// addresses is a classic way around such checks), unless allowed.
    pub fn check_destinations(&self, addrs: &[SocketAddr]) -> Result<(), Answer> {
        if self.allow_local_destinations {
            return Ok(());
        }
        match addrs.iter().find(|a| is_local_destination(a.ip())) {
            None => Ok(()),
            Some(bad) => Err(Answer::refused(
                Refusal::ForwardNotAllowed,
                403,
                format!("403 Forbidden: destination {bad} is local to the proxy\n"),
            )),
        }
    }

    /// Every address of `host` (a name or a literal IP), within the resolve
    /// timeout; a 502 naming the name when there is none.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Answer> {
        let failed = |why: &str| {
            Answer::failed(
                502,
                "ResolveError",
                format!("502 Bad Gateway: cannot resolve {host}: {why}\n"),
            )
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip.to_canonical(), port)]);
        }
        let lookup = tokio::net::lookup_host((host, port));
        let addrs: Vec<SocketAddr> = match tokio::time::timeout(self.resolve_timeout, lookup).await
        {
            Ok(Ok(it)) => it.map(crate::addr::canonical).collect(),
            Ok(Err(e)) => return Err(failed(&e.to_string())),
            Err(_) => return Err(failed("timed out")),
        };
        if addrs.is_empty() {
            return Err(Answer::failed(
                502,
                "ResolveError",
                format!("502 Bad Gateway: {host} has no address\n"),
            ));
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(clients: &[&str], ports: Option<&[u16]>) -> Result<ForwardPolicy, ConfigError> {
        let clients: Vec<String> = clients.iter().map(|c| c.to_string()).collect();
        let keys = ForwardKeys {
            allow_clients: Some(&clients),
            connect_ports: ports,
            allow_local_destinations: None,
        };
        keys.validate("l", Duration::from_secs(1))
    }

    #[test]
    fn defaults_allow_nobody_and_only_443() {
        let p = policy(&[], None).unwrap();
        let client = ClientAddr::new("192.0.2.10:1".parse().unwrap());
        assert!(!p.client_allowed(Some(client)));
        assert!(p.check_connect_port(443).is_ok());
        assert_eq!(p.check_connect_port(22).unwrap_err().status, 403);
        assert!(!p.allow_local_destinations);
    }

    #[test]
    fn settings_errors_name_the_key() {
        let e = policy(&["10.0.0.0/40"], None).unwrap_err();
        assert!(e.to_string().contains("l.allow_clients[0]"), "{e}");
        let e = policy(&[], Some(&[443, 0])).unwrap_err();
        assert!(e.to_string().contains("l.connect_ports"), "{e}");
    }

    #[test]
    fn literal_addresses_resolve_without_dns_and_local_ones_are_refused() {
        let p = policy(&["192.0.2.0/24"], None).unwrap();
        let addrs = futures::executor::block_on(p.resolve("::ffff:127.0.0.1", 80)).unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:80".parse().unwrap()]);
        let refused = p.check_destinations(&addrs).unwrap_err();
        assert_eq!(refused.refusal, Some(Refusal::ForwardNotAllowed));
        assert!(p
            .check_destinations(&["198.51.100.10:80".parse().unwrap()])
            .is_ok());
    }
}
