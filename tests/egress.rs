//! Egress through real parents, each in a namespace of its own: Debian's
//! `squid` as a parent HTTP proxy with basic authentication
//! (`basic_ncsa_auth`, an `htpasswd` file), `microsocks` as an
//! authenticated SOCKS5 proxy, and a VPN-like gateway reached through an
//! interface egress. For HTTP, TLS passthrough, a raw tunnel and CONNECT:
//! the parent receives the name (its log says so, or the name resolves
//! only there), a route with a name set goes direct, wrong credentials
//! give 502 with the parent's 407 logged, a parent that is down fails
//! fast without reaching the origin unless `fallback: direct`.

mod harness;

use harness::*;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A name only the parents can resolve: reaching it proves the parent got
/// the name, not an address.
const PARENT_ONLY: &str = "parent-only.lab.test";

struct Squid {
    host: SideHost,
    _child: std::process::Child,
    log: std::path::PathBuf,
    /// `client-address:port method URL` a request.
    conns: std::path::PathBuf,
}

fn squid(lab: &Lab, dir: &Path) -> Squid {
    let host = SideHost::add(lab, "sq", 1);
    host.hosts(&format!(
        "{SERVER_V4} {PARENT_ONLY}\n{SERVER_V4} www.lab.test\n"
    ));
    let d = dir.join("squid");
    std::fs::create_dir_all(&d).unwrap();
    let out = Command::new("htpasswd")
        .args(["-b", "-c"])
        .arg(d.join("passwd"))
        .args(["gw", "s3cret"])
        .output()
        .unwrap();
    assert!(out.status.success(), "htpasswd: {out:?}");
    let conf = format!(
        "http_port {a}:3128\nvisible_hostname parent.test\npid_filename {d}/squid.pid\n\
         cache_log {d}/cache.log\naccess_log {d}/access.log squid\ncoredump_dir {d}\ncache deny all\n\
         logformat conns %>a:%>p %rm %ru\naccess_log {d}/conns.log conns\n\
         dns_nameservers 127.0.0.1\n\
         auth_param basic program /usr/lib/squid/basic_ncsa_auth {d}/passwd\nauth_param basic realm test\n\
         acl authed proxy_auth REQUIRED\nhttp_access allow authed\nhttp_access deny all\n",
        a = host.addr,
        d = d.display()
    );
    std::fs::write(d.join("squid.conf"), conf).unwrap();
    Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(dir)
        .output()
        .unwrap();
    let child = host.spawn(
        &["squid", "-N", "-f", d.join("squid.conf").to_str().unwrap()],
        &d.join("out.log"),
    );
    let addr = format!("{}:3128", host.addr);
    wait_until("squid to listen", Duration::from_secs(20), || {
        let a: std::net::SocketAddr = addr.parse().unwrap();
        in_netns(&lab.router_ns(), move || {
            std::net::TcpStream::connect(a).is_ok()
        })
    });
    Squid {
        host,
        _child: child,
        log: d.join("access.log"),
        conns: d.join("conns.log"),
    }
}

/// Two GETs for `host` on one client connection; the responses.
fn two_gets(lab: &Lab, dst: &str, host: &str, paths: [&str; 2]) -> [Response; 2] {
    let mut c = Client::new(lab.client_connect(dst).expect("connect"));
    paths.map(|p| {
        c.get(host, p, &[])
            .unwrap_or_else(|e| panic!("GET {p}: {e}"))
    })
}

impl Squid {
    /// The client address and port squid saw for the request to `url`.
    fn conn_of(&self, url: &str) -> String {
        let mut found = None;
        poll_until(Duration::from_secs(10), || {
            let log = std::fs::read_to_string(&self.conns).unwrap_or_default();
            found = log
                .lines()
                .find(|l| l.ends_with(&format!(" {url}")))
                .and_then(|l| l.split(' ').next().map(str::to_string));
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("squid never logged {url}"))
    }

    fn wait_log(&self, needles: &[&str]) -> String {
        let mut last = String::new();
        let ok = poll_until(Duration::from_secs(10), || {
            last = std::fs::read_to_string(&self.log).unwrap_or_default();
            last.lines().any(|l| needles.iter().all(|n| l.contains(n)))
        });
        assert!(ok, "squid's log lacks {needles:?}:\n{last}");
        last
    }
}

fn socks(lab: &Lab, dir: &Path) -> (SideHost, std::process::Child) {
    let host = SideHost::add(lab, "sk", 2);
    host.hosts(&format!("{SERVER_V4} {PARENT_ONLY}\n"));
    let child = host.spawn(
        &[
            "microsocks",
            "-i",
            &host.addr.clone(),
            "-p",
            "1080",
            "-u",
            "gw",
            "-P",
            "s3cret",
        ],
        &dir.join("socks.log"),
    );
    let a: std::net::SocketAddr = format!("{}:1080", host.addr).parse().unwrap();
    wait_until("microsocks to listen", Duration::from_secs(10), || {
        in_netns(&lab.router_ns(), move || {
            std::net::TcpStream::connect(a).is_ok()
        })
    });
    (host, child)
}

/// The lab config with a forward and a passthrough listener, `egress`
/// and `routes` (YAML under `tproxyd:`) and a `direct` name set.
fn config(dir: &Path, egress: &str, routes: &str) -> String {
    std::fs::write(dir.join("local.txt"), "www.lab.test\n").unwrap();
    std::fs::write(dir.join("pw"), "s3cret\n").unwrap();
    std::fs::write(dir.join("bad-pw"), "wrong\n").unwrap();
    let extra = format!(
        "  sets:\n    local: {{ file: {d}/local.txt }}\n  egress:\n{egress}  routes:\n{routes}",
        d = dir.display()
    );
    lab_config(dir, &extra).replace(
        "  upstream:",
        r#"    - name: lan-tls
      address: "[::]:8443"
      mode: tls-passthrough
    - name: fwd
      address: "[::]:3128"
      mode: forward
      allow_clients: ["192.0.2.0/24"]
      connect_ports: [443]
  upstream:"#,
    )
}

fn curl_tls(lab: &Lab, name: &str) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client_ns(),
            "curl",
            "-sSk",
            "--max-time",
            "3",
            "--resolve",
        ])
        .arg(format!("{name}:443:{SERVER_V4}"))
        .arg(format!("https://{name}/"))
        .output()
        .unwrap()
        .status
        .success()
}

/// A CONNECT's status line (and body for a refusal).
fn connect(lab: &Lab, authority: &str) -> String {
    let mut s = lab
        .client_connect_from(CLIENT_V4, &format!("{ROUTER_LAN_V4}:3128"))
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .unwrap();
    let mut got = vec![0u8; 4096];
    let n = s.read(&mut got).unwrap_or(0);
    String::from_utf8_lossy(&got[..n]).to_string()
}

/// Bytes that are not HTTP, sent to `dst` and echoed back.
fn raw_tunnel(lab: &Lab, dst: &str) -> Vec<u8> {
    let mut s = lab.client_connect(dst).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"\x00\x01binary hello").unwrap();
    let mut back = vec![0u8; 14];
    let _ = s.read_exact(&mut back);
    back
}

#[test]
fn an_http_parent_gets_the_name_and_the_user_for_every_kind_of_flow() {
    if !lab_available("egress_http_parent") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    Origin::start_echo(&lab, 443);
    Origin::start_echo(&lab, 85);
    let dir = TempDir::new("egress-http");
    let sq = squid(&lab, &dir.0);
    let egress = format!(
        "    corp: {{ via: http, address: \"{}:3128\", username: gw, password_file: {}/pw }}\n",
        sq.host.addr,
        dir.0.display()
    );
    let routes = "    - { name: local, egress: direct, host_set: [local] }\n    - { name: all, egress: corp }\n";
    let proxy = Proxy::start(
        &lab,
        &config(&dir.0, &egress, routes),
        &[8888, 8889, 8443, 3128],
    );
    let v4 = format!("{SERVER_V4}:80");
    // HTTP: in absolute form to the parent, as user gw; the origin sees it.
    let r = get(&lab, &v4, PARENT_ONLY, "/via-parent");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        origin.wait_request("/via-parent").peer.ip().to_string(),
        sq.host.addr
    );
    sq.wait_log(&["GET http://parent-only.lab.test/via-parent", " gw "]);
    proxy.wait_access(&["/via-parent", "egress=corp"]);
    // Keep-alive requests share one pooled connection to the parent.
    let [a, b] = two_gets(&lab, &v4, PARENT_ONLY, ["/pooled-1", "/pooled-2"]);
    assert_eq!((a.status, b.status), (200, 200), "{a:?} {b:?}");
    assert_eq!(
        sq.conn_of("http://parent-only.lab.test/pooled-1"),
        sq.conn_of("http://parent-only.lab.test/pooled-2"),
        "the second request did not reuse the connection to the parent"
    );
    // A route with a name set sends its names direct.
    assert_eq!(get(&lab, &v4, "www.lab.test", "/direct").status, 200);
    assert_eq!(
        origin.wait_request("/direct").peer.ip().to_string(),
        ROUTER_WAN_V4
    );
    proxy.wait_access(&["/direct", "egress=direct"]);
    // TLS passthrough: CONNECT by its SNI.
    let _ = curl_tls(&lab, PARENT_ONLY);
    proxy.wait_access(&["TLS parent-only.lab.test", "tls=spliced", "egress=corp"]);
    sq.wait_log(&["CONNECT parent-only.lab.test:443", " gw "]);
    // A raw tunnel has no name: the address.
    assert_eq!(
        raw_tunnel(&lab, &format!("{SERVER_V4}:85")),
        b"\x00\x01binary hello"
    );
    sq.wait_log(&[&format!("CONNECT {SERVER_V4}:85"), " gw "]);
    // CONNECT: its authority, which tproxyd never looks up (it cannot).
    let answer = connect(&lab, &format!("{PARENT_ONLY}:443"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    proxy.wait_access(&["CONNECT parent-only.lab.test:443", "egress=corp"]);
    let log = sq.wait_log(&["CONNECT parent-only.lab.test:443"]);
    assert_eq!(
        log.matches("CONNECT parent-only.lab.test:443").count(),
        2,
        "{log}"
    );
    assert!(
        !log.contains("www.lab.test"),
        "the direct route bypassed the parent:\n{log}"
    );
}

#[test]
fn a_refusing_or_dead_parent_fails_fast_and_is_never_gone_around_unless_told() {
    if !lab_available("egress_parent_failures") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    Origin::start_echo(&lab, 443);
    let dir = TempDir::new("egress-fail");
    let sq = squid(&lab, &dir.0);
    let d = dir.0.display();
    let a = &sq.host.addr;
    let egress = format!(
        "    bad: {{ via: http, address: \"{a}:3128\", username: gw, password_file: {d}/bad-pw }}\n\
         \x20   dead: {{ via: http, address: \"{a}:3129\" }}\n\
         \x20   hole: {{ via: http, address: \"{SERVER_V4}:81\" }}\n\
         \x20   back: {{ via: socks5, address: \"{a}:3129\", fallback: direct }}\n\
         \x20   corpback: {{ via: http, address: \"{a}:3129\", username: gw, password_file: {d}/pw, fallback: direct }}\n"
    );
    let routes = "    - { egress: bad, host: [bad.test] }\n    - { egress: dead, host: [dead.test] }\n    - { egress: hole, host: [hole.test] }\n    - { egress: back, host: [back.test] }\n    - { egress: corpback, host: [corpback.test] }\n";
    let proxy = Proxy::start(
        &lab,
        &config(&dir.0, &egress, routes),
        &[8888, 8889, 8443, 3128],
    );
    let v4 = format!("{SERVER_V4}:80");
    // Wrong credentials: a 502 naming the parent, its 407 logged.
    let r = get(&lab, &v4, "bad.test", "/bad");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(
        r.body.contains("parent proxy bad refused") && r.body.contains("407"),
        "{}",
        r.body
    );
    proxy.wait_access(&["/bad", "502", "egress=bad", "parent_status=407"]);
    let answer = connect(&lab, "bad.test:443");
    assert!(
        answer.starts_with("HTTP/1.1 502") && answer.contains("407"),
        "{answer}"
    );
    // Opaque: a reset, the parent's status in the log.
    assert!(!curl_tls(&lab, "bad.test"));
    proxy.wait_access(&["TLS bad.test", "tls=connect_failed", "parent_status=407"]);
    // Down: 502 at once; blackholed: 504 within connect_timeout (1 s).
    assert_eq!(get(&lab, &v4, "dead.test", "/dead").status, 502);
    let started = Instant::now();
    let r = get(&lab, &v4, "hole.test", "/hole");
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(origin.count(), 0, "no flow went around its parent");
    // With fallback: direct, a dead parent is gone around.
    assert_eq!(get(&lab, &v4, "back.test", "/back").status, 200);
    assert_eq!(
        origin.wait_request("/back").peer.ip().to_string(),
        ROUTER_WAN_V4
    );
    // Around an HTTP parent with credentials: the origin gets the request
    // in origin form, without the parent's credentials.
    assert_eq!(get(&lab, &v4, "corpback.test", "/corpback").status, 200);
    let seen = origin.wait_request("/corpback");
    assert!(
        !seen.headers.contains_key("proxy-authorization"),
        "{seen:?}"
    );
    assert_eq!(seen.peer.ip().to_string(), ROUTER_WAN_V4);
    let body = admin_get(&lab, "/metrics").body;
    let fallback = metric(
        &body,
        "tproxyd_egress_requests_total",
        &[r#"egress="back""#, r#"result="fallback""#],
    );
    assert_eq!(fallback, Some(1.0), "{body}");
    let refused = metric(
        &body,
        "tproxyd_egress_requests_total",
        &[r#"egress="bad""#, r#"result="refused""#],
    );
    assert_eq!(
        refused,
        Some(3.0),
        "HTTP, CONNECT and TLS, each counted once: {body}"
    );
    assert!(
        !proxy.log_text().contains("s3cret") && !proxy.log_text().contains("wrong"),
        "no password logged"
    );
}

#[test]
fn a_socks5_proxy_gets_the_name_with_credentials() {
    if !lab_available("egress_socks5") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    Origin::start_echo(&lab, 443);
    Origin::start_echo(&lab, 85);
    let dir = TempDir::new("egress-socks");
    let (host, _child) = socks(&lab, &dir.0);
    let d = dir.0.display();
    let a = &host.addr;
    let egress = format!(
        "    s5: {{ via: socks5, address: \"{a}:1080\", username: gw, password_file: {d}/pw }}\n\
         \x20   s5bad: {{ via: socks5, address: \"{a}:1080\", username: gw, password_file: {d}/bad-pw }}\n"
    );
    let routes = "    - { egress: s5bad, host: [bad.test] }\n    - { egress: s5 }\n";
    let proxy = Proxy::start(
        &lab,
        &config(&dir.0, &egress, routes),
        &[8888, 8889, 8443, 3128],
    );
    let v4 = format!("{SERVER_V4}:80");
    // Only the SOCKS host resolves the name: the domain address type.
    let r = get(&lab, &v4, PARENT_ONLY, "/via-socks");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        origin.wait_request("/via-socks").peer.ip().to_string(),
        host.addr
    );
    proxy.wait_access(&["/via-socks", "egress=s5"]);
    // Keep-alive requests share one pooled tunnel through the proxy: the
    // origin sees them on one connection.
    let [a, b] = two_gets(&lab, &v4, PARENT_ONLY, ["/socks-1", "/socks-2"]);
    assert_eq!((a.status, b.status), (200, 200), "{a:?} {b:?}");
    assert_eq!(
        origin.wait_request("/socks-1").peer,
        origin.wait_request("/socks-2").peer,
        "the second request did not reuse the tunnel"
    );
    assert!(connect(&lab, &format!("{PARENT_ONLY}:443")).starts_with("HTTP/1.1 200"));
    let _ = curl_tls(&lab, PARENT_ONLY);
    proxy.wait_access(&["TLS parent-only.lab.test", "tls=spliced", "egress=s5"]);
    assert_eq!(
        raw_tunnel(&lab, &format!("{SERVER_V4}:85")),
        b"\x00\x01binary hello"
    );
    // Wrong credentials: refused, 502.
    let r = get(&lab, &v4, "bad.test", "/bad");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.contains("s5bad"), "{}", r.body);
    assert!(origin.seen().iter().all(|s| s.path != "/bad"));
}

#[test]
fn an_interface_egress_leaves_through_its_interface() {
    if !lab_available("egress_interface") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("egress-if");
    // A VPN-like gateway: it masquerades what the router sends it.
    let vpn = SideHost::add(&lab, "vpn", 3);
    vpn.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let nat = "table ip nat {\n chain post {\n  type nat hook postrouting priority srcnat;\n  oifname \"eth0\" ip daddr 198.51.100.0/24 masquerade\n }\n}\n";
    std::fs::write(dir.0.join("nat.nft"), nat).unwrap();
    assert!(vpn
        .exec(&["nft", "-f", dir.0.join("nat.nft").to_str().unwrap()])
        .status
        .success());
    let rtr = lab.router_ns();
    let route = [
        "ip",
        "route",
        "add",
        "default",
        "via",
        &vpn.addr,
        "dev",
        &vpn.router_dev,
    ];
    assert!(lab.exec(&rtr, &route).status.success());
    let count = "table inet egresstest {\n chain out {\n  type filter hook postrouting priority 0;\n  oifname \"vpn0\" counter\n }\n}\n";
    std::fs::write(dir.0.join("count.nft"), count).unwrap();
    assert!(lab
        .exec(
            &rtr,
            &["nft", "-f", dir.0.join("count.nft").to_str().unwrap()]
        )
        .status
        .success());
    let egress = "    vpn: { via: direct, interface: vpn0 }\n";
    let routes = "    - { egress: vpn, host: [www.lab.test] }\n";
    let proxy = Proxy::start(&lab, &config(&dir.0, egress, routes), &[8888, 8889]);
    let v4 = format!("{SERVER_V4}:80");
    assert_eq!(get(&lab, &v4, "www.lab.test", "/by-vpn").status, 200);
    assert_eq!(
        origin.wait_request("/by-vpn").peer.ip().to_string(),
        vpn.addr
    );
    assert_eq!(get(&lab, &v4, "other.test", "/by-wan").status, 200);
    assert_eq!(
        origin.wait_request("/by-wan").peer.ip().to_string(),
        ROUTER_WAN_V4
    );
    let out = lab.exec(&rtr, &["nft", "list", "table", "inet", "egresstest"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let packets: u64 = text
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(packets >= 3, "{text}");
    proxy.wait_access(&["/by-vpn", "egress=vpn"]);
}
