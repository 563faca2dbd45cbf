//! The admin listener and the Prometheus metrics it serves.

use std::net::TcpStream;

use super::{in_netns, Client, Lab, Response};

/// GET `path` from the admin listener (127.0.0.1:9187 in the router). The
/// admin service starts beside the listeners, not before them: a refused
/// connection is retried for up to 5 s.
pub fn admin_get(lab: &Lab, path: &str) -> Response {
    admin_get_with(lab, path, &[])
}

/// [`admin_get`] with extra header lines (e.g. `Authorization`).
pub fn admin_get_with(lab: &Lab, path: &str, headers: &[(&str, &str)]) -> Response {
    let path = path.to_string();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    in_netns(&lab.router_ns(), move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let s = loop {
            match TcpStream::connect("127.0.0.1:9187") {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() >= deadline => panic!("admin listener: {e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Client::new(s)
            .get("127.0.0.1:9187", &path, &headers)
            .expect("admin response")
    })
}

/// The value of the sample of metric `name` whose labels include all of
/// `labels` (each `key="value"`; Prometheus sorts label names, so order
/// does not matter).
pub fn metric(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    body.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let (set, value) = match rest.strip_prefix('{') {
            Some(r) => {
                let (set, v) = r.split_once("} ")?;
                (set.split(',').collect::<Vec<_>>(), v)
            }
            None => (Vec::new(), rest.strip_prefix(' ')?),
        };
        if set.len() != labels.len() || !labels.iter().all(|want| set.contains(want)) {
            return None;
        }
        value.trim().parse().ok()
    })
}

/// A counter of the lab's tproxy listener (`lan-http`) with one more label
/// (`extra`, e.g. `limit="per_client"`); 0 when absent.
pub fn lan_http_counter(lab: &Lab, name: &str, extra: &str) -> f64 {
    let body = admin_get(lab, "/metrics").body;
    metric(
        &body,
        name,
        &[r#"listener="lan-http""#, r#"mode="tproxy""#, extra],
    )
    .unwrap_or(0.0)
}

/// `tproxyd_downstream_limit_total{limit}` of the lab's tproxy listener.
pub fn downstream_limit(lab: &Lab, limit: &str) -> f64 {
    lan_http_counter(
        lab,
        "tproxyd_downstream_limit_total",
        &format!("limit=\"{limit}\""),
    )
}

/// Open client connections of all listeners
/// (`tproxyd_downstream_connections_active`, summed).
pub fn open_connections(lab: &Lab) -> f64 {
    let body = admin_get(lab, "/metrics").body;
    body.lines()
        .filter(|l| l.starts_with("tproxyd_downstream_connections_active{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
