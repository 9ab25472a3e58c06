//! Who may use the console: the `Host` check (against DNS rebinding), and
//! for mutating requests read-only mode, a JSON content type and a
//! same-origin `Origin` (against cross-site requests).
//!
//! A page on another site can make the operator's browser send a "simple"
//! request (a form-encoded or text/plain `POST`) to `127.0.0.1:4000`
//! without any preflight; requiring `application/json` forces a CORS
//! preflight that the console never answers, and the browser's `Origin`
//! header names the page that sent the request. A rebound DNS name reaches
//! the console with that name in `Host`, which is neither an address the
//! console listens on nor an allowed host.

use std::net::{IpAddr, SocketAddr};

use http::header::{CONTENT_TYPE, HOST, ORIGIN};
use http::StatusCode;
use serde_json::json;

use super::{Console, Mode};
use ember_web::{Request, Response};

/// Why a request is refused: answered `{"error": message}` with `status`.
pub(crate) struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    /// The JSON error response.
    pub(crate) fn response(self) -> Response {
        let mut response = ember_web::json(&json!({ "error": self.message }));
        *response.status_mut() = self.status;
        response
    }
}

fn refusal(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// The request's `Host` (or its URI's authority), lowercased.
fn host_of(request: &Request) -> Option<String> {
    let header = request.headers().get(HOST);
    match header {
        Some(value) => value.to_str().ok().map(str::to_ascii_lowercase),
        None => request
            .uri()
            .authority()
            .map(|a| a.as_str().to_ascii_lowercase()),
    }
}

/// Splits `name[:port]` (`[v6]:port` too) into the name and the port.
fn split_host(host: &str) -> (&str, Option<&str>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((name, tail)) => (name, tail.strip_prefix(':')),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, Some(port)),
        _ => (host, None),
    }
}

/// Whether `host` (a `Host` value) names this console: an allowed host, or
/// an address it listens on. Ports are not compared: rebinding needs a
/// name, and a name or IP literal that is ours is ours on any port.
pub(crate) fn host_allowed(host: &str, listening: &[SocketAddr], allowed: &[String]) -> bool {
    let host = host.to_ascii_lowercase();
    let (name, port) = split_host(&host);
    if name.is_empty() {
        return false;
    }
    for entry in allowed {
        let entry = entry.to_ascii_lowercase();
        let (allowed_name, allowed_port) = split_host(&entry);
        if allowed_name == name && (allowed_port.is_none() || allowed_port == port) {
            return true;
        }
    }
    // Unknown addresses: behave as a loopback-bound console.
    let loopback_only = [SocketAddr::from(([127, 0, 0, 1], 0))];
    let listening = if listening.is_empty() {
        &loopback_only[..]
    } else {
        listening
    };
    let local = listening
        .iter()
        .any(|a| a.ip().is_loopback() || a.ip().is_unspecified());
    if name == "localhost" {
        return local;
    }
    let Ok(ip) = name.parse::<IpAddr>() else {
        return false;
    };
    listening.iter().any(|a| {
        a.ip() == ip
            || (a.ip().is_unspecified() && !ip.is_unspecified())
            || (a.ip().is_loopback() && ip.is_loopback())
    })
}

/// `403` unless `Host` names this console.
pub(crate) fn check_host(console: &Console, request: &Request) -> Result<(), Refusal> {
    let Some(host) = host_of(request) else {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "the console needs a Host header",
        ));
    };
    let listening = console.listening();
    if host_allowed(&host, &listening, &console.options.allowed_hosts) {
        return Ok(());
    }
    let (name, _) = split_host(&host);
    Err(refusal(
        StatusCode::FORBIDDEN,
        format!(
            "Host {host:?} is not an address this console listens on; \
             start the node with --allowed-host {name} if it is yours"
        ),
    ))
}

/// Read-only mode (`403`), the content type (`415` unless JSON) and the
/// `Origin` (`403` unless absent or naming the `Host`).
pub(crate) fn check_mutation(console: &Console, request: &Request) -> Result<(), Refusal> {
    check_writable(console)?;
    let json = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a console action needs Content-Type: application/json and a JSON body (e.g. {})",
        ));
    }
    check_origin(request)
}

/// `403` in read-only mode.
fn check_writable(console: &Console) -> Result<(), Refusal> {
    if console.options.mode == Mode::ReadOnly {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "the console is read-only (the node was started with --console read-only)",
        ));
    }
    Ok(())
}

/// Read-only mode and the `Origin` (`403`), for a mutating request to the
/// application's own API beside the console (`/api/jobs`, `/api/services`,
/// `/api/node/stop`). Its content type is not checked: the contract's
/// `POST /api/node/stop` carries no body, and a cross-site request always
/// carries an `Origin`.
pub(crate) fn check_app_mutation(console: &Console, request: &Request) -> Result<(), Refusal> {
    check_writable(console)?;
    check_origin(request)
}

/// `403` unless `Origin` is absent or names the `Host`.
fn check_origin(request: &Request) -> Result<(), Refusal> {
    let Some(origin) = request.headers().get(ORIGIN) else {
        return Ok(()); // not sent by a browser on another page
    };
    let host = host_of(request).unwrap_or_default();
    let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
    if same_origin(&origin, &host) {
        Ok(())
    } else {
        Err(refusal(
            StatusCode::FORBIDDEN,
            format!(
                "cross-origin request refused: Origin {origin:?} is not this console ({host:?})"
            ),
        ))
    }
}

/// Whether `origin` (`scheme://host[:port]`) names `host` (a `Host` value),
/// default ports included.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // "null" and garbage
    };
    let default_port = match scheme {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let (origin_name, origin_port) = split_host(authority);
    let (host_name, host_port) = split_host(host);
    origin_name == host_name
        && origin_port.unwrap_or(default_port) == host_port.unwrap_or(default_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn hosts_are_checked_against_the_listening_addresses() {
        let lo = [addr("127.0.0.1:4000")];
        assert!(host_allowed("127.0.0.1:4000", &lo, &[]));
        assert!(host_allowed("localhost:4000", &lo, &[]));
        assert!(host_allowed("[::1]:4000", &lo, &[]));
        assert!(!host_allowed("evil.example:4000", &lo, &[]));
        assert!(!host_allowed("10.0.0.5:4000", &lo, &[]));
        assert!(!host_allowed("", &lo, &[]));
        let any = [addr("0.0.0.0:4000")];
        assert!(host_allowed("10.0.0.5:4000", &any, &[]));
        assert!(!host_allowed("evil.example", &any, &[]));
        let one = [addr("10.0.0.5:4000")];
        assert!(host_allowed("10.0.0.5:4000", &one, &[]));
        assert!(!host_allowed("localhost:4000", &one, &[]));
        let allowed = ["console.example.com".to_string(), "proxy:8080".to_string()];
        assert!(host_allowed("Console.Example.com:443", &one, &allowed));
        assert!(host_allowed("proxy:8080", &one, &allowed));
        assert!(!host_allowed("proxy:9090", &one, &allowed));
        // Unknown addresses: loopback only.
        assert!(host_allowed("localhost", &[], &[]));
        assert!(!host_allowed("test", &[], &[]));
    }

    #[test]
    fn origins_must_name_the_host() {
        assert!(same_origin("http://127.0.0.1:4000", "127.0.0.1:4000"));
        assert!(same_origin("http://localhost", "localhost:80"));
        assert!(!same_origin("http://evil.example", "127.0.0.1:4000"));
        assert!(!same_origin("http://127.0.0.1:4001", "127.0.0.1:4000"));
        assert!(same_origin(
            "https://console.example.com",
            "console.example.com"
        ));
        assert!(!same_origin("null", "127.0.0.1:4000"));
    }
}
