//! Header values with variables (`X-Client: "$client_ip"`), parsed once at
//! start-up so that rendering a request only concatenates.

use super::FilterCtx;
use http::HeaderValue;

/// A variable a header value may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `$client_ip`
    ClientIp,
    /// `$client_port`
    ClientPort,
    /// `$dst_ip`: the original destination's IP.
    DstIp,
    /// `$dst_port`
    DstPort,
    /// `$host`: the request's Host header as sent by the client.
    Host,
    /// `$request_id`
    RequestId,
    /// `$listener`: the listener's name.
    Listener,
}

impl Var {
    const ALL: [(&'static str, Var); 7] = [
        ("client_ip", Var::ClientIp),
        ("client_port", Var::ClientPort),
        ("dst_ip", Var::DstIp),
        ("dst_port", Var::DstPort),
        ("host", Var::Host),
        ("request_id", Var::RequestId),
        ("listener", Var::Listener),
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(Var),
}

/// A header value template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    /// The value itself when there are no variables.
    fixed: Option<HeaderValue>,
}

impl Template {
    /// Parses `$name` variables (`$$` is a literal `$`). Unknown variables
    /// and values that cannot be header values are errors.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            lit.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(r) = rest.strip_prefix('$') {
                lit.push('$');
                rest = r;
                continue;
            }
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            let var = Var::ALL
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    let known: Vec<String> =
                        Var::ALL.iter().map(|(n, _)| format!("${n}")).collect();
                    format!("unknown variable ${name} (known: {})", known.join(", "))
                })?;
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(Part::Var(var));
            rest = &rest[end..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        for p in &parts {
            if let Part::Lit(l) = p {
                HeaderValue::from_str(l)
                    .map_err(|_| format!("{l:?} is not a valid header value"))?;
            }
        }
        let fixed = match parts.as_slice() {
            [] => Some(HeaderValue::from_static("")),
            [Part::Lit(l)] => Some(HeaderValue::from_str(l).expect("checked above")),
            _ => None,
        };
        Ok(Template { parts, fixed })
    }

    /// The value for this request.
    pub fn render(&self, ctx: &FilterCtx) -> HeaderValue {
        if let Some(v) = &self.fixed {
            return v.clone();
        }
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(l) => out.push_str(l),
                Part::Var(v) => {
                    use std::fmt::Write;
                    let f = &ctx.flow;
                    let _ = match v {
                        Var::ClientIp => write!(out, "{}", f.client.ip()),
                        Var::ClientPort => write!(out, "{}", f.client.port()),
                        Var::DstIp => write!(out, "{}", f.destination.ip()),
                        Var::DstPort => write!(out, "{}", f.destination.port()),
                        Var::Host => {
                            out.push_str(ctx.host.as_deref().unwrap_or(""));
                            Ok(())
                        }
                        Var::RequestId => write!(out, "{}", f.request_id),
                        Var::Listener => {
                            out.push_str(&f.listener);
                            Ok(())
                        }
                    };
                }
            }
        }
        // Variables come from addresses, ids, names and an already valid
        // Host header, so this cannot fail; stay safe regardless.
        HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::RequestId;

    fn ctx() -> FilterCtx {
        let mut c =
            crate::filters::test_ctx("192.0.2.10:5555", "[2001:db8::1]:80", Some("example.org"));
        c.flow.request_id = RequestId(0xabc);
        c
    }

    #[test]
    fn renders_variables() {
        let t = Template::parse(
            "$client_ip:$client_port -> [$dst_ip]:$dst_port $host $listener $request_id $$5",
        )
        .unwrap();
        assert_eq!(
            t.render(&ctx()),
            "192.0.2.10:5555 -> [2001:db8::1]:80 example.org lan 0000000000000abc $5"
        );
        assert_eq!(Template::parse("plain").unwrap().render(&ctx()), "plain");
        assert_eq!(Template::parse("").unwrap().render(&ctx()), "");
    }

    #[test]
    fn rejects_unknown_variables_and_bad_values() {
        let e = Template::parse("x $client_addr").unwrap_err();
        assert!(
            e.contains("$client_addr") && e.contains("$client_ip"),
            "{e}"
        );
        assert!(Template::parse("a\nb").is_err());
    }
}
