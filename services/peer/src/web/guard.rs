//! Who may use the web UI, checked on every request before any handler:
//!
//! 1. **Host** (DNS rebinding): the `Host` header must be an IP address,
//!    `localhost`, or a name given with `--web-allow-host`
//!    ([`hive_runtime::web::host_ok`], which the tracker's page uses too).
//! 2. **Origin** (cross-origin requests): a request that carries `Origin`
//!    must come from this UI's own origin; a mutating one marked
//!    `Sec-Fetch-Site: cross-site` or `same-site` is refused.
//! 3. **Secret**, when the UI is not on loopback: `Authorization: Bearer
//!    COOKIE` (the control cookie, `DIR/.hive/control.cookie`), or the
//!    HttpOnly session cookie the login page sets once given it.
//! 4. **CSRF token** on every mutating request (anything but GET and HEAD):
//!    the `X-Hive-Csrf` header, or a `csrf` form field for the pages' plain
//!    forms. The token is random at each start; the pages carry it, and
//!    `GET /api/v1/status` gives it (as `csrf`) to scripts. Another site can
//!    neither read it nor set a custom header on a cross-origin request.

use std::{collections::HashMap, net::SocketAddr};

use axum::{
    Form,
    body::Body,
    extract::{FromRequest, Request, State},
    http::{HeaderMap, Method, header},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
};
use tonic::Status;

use super::{
    Web,
    reply::{ApiError, PageError},
};
use crate::{access, error::PeerError};

/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-hive-csrf";
/// The form field that carries it in the pages' plain forms.
pub const CSRF_FIELD: &str = "csrf";
/// The session cookie the login page sets.
pub const SESSION_COOKIE: &str = "hive_session";
/// A form body read for its CSRF field is at most this long.
const FORM_LIMIT: usize = 64 * 1024;

pub struct Guard {
    /// The control cookie, when the UI is off loopback.
    secret: Option<String>,
    /// The session cookie's value once logged in; random at each start.
    session: String,
    csrf: String,
    allow_hosts: Vec<String>,
}

impl Guard {
    pub fn new(
        addr: SocketAddr,
        secret: Option<String>,
        allow_hosts: Vec<String>,
    ) -> Result<Self, PeerError> {
        let random = || {
            access::random_hex::<32>()
                .map_err(|e| PeerError::Internal(format!("no random bytes for the web UI: {e}")))
        };
        Ok(Self {
            secret: secret.filter(|_| !addr.ip().is_loopback()),
            session: random()?,
            csrf: random()?,
            allow_hosts: hive_runtime::web::allowed_hosts(allow_hosts),
        })
    }

    /// The token mutating requests must carry.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether requests must carry the secret.
    pub fn locked(&self) -> bool {
        self.secret.is_some()
    }

    /// The session cookie to set for someone who gave `secret`, if right.
    pub fn login(&self, given: &str) -> Option<String> {
        let secret = self.secret.as_ref()?;
        access::same(given.trim().as_bytes(), secret.as_bytes()).then(|| {
            format!(
                "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
                self.session
            )
        })
    }

    fn host_ok(&self, headers: &HeaderMap) -> Result<(), String> {
        hive_runtime::web::host_ok(headers, &self.allow_hosts, "peer")
    }

    fn authenticated(&self, headers: &HeaderMap) -> bool {
        let Some(secret) = &self.secret else {
            return true;
        };
        let bearer = header_str(headers, header::AUTHORIZATION)
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| access::same(given.trim().as_bytes(), secret.as_bytes()));
        let session = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .any(|(k, v)| {
                k == SESSION_COOKIE && access::same(v.as_bytes(), self.session.as_bytes())
            });
        bearer || session
    }
}

/// The middleware: the checks above, in that order.
pub async fn check(State(web): State<Web>, req: Request, next: Next) -> Response {
    let guard = &web.guard;
    let api = req.uri().path().starts_with("/api/");
    let refuse = |status: Status| -> Response {
        if api {
            ApiError(status).into_response()
        } else {
            PageError(status).into_response()
        }
    };
    let headers = req.headers();
    if let Err(why) = guard.host_ok(headers) {
        return refuse(Status::permission_denied(why));
    }
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD);
    if let Err(why) = same_origin(headers, mutating) {
        return refuse(Status::permission_denied(why));
    }
    let path = req.uri().path();
    let open = path == "/login" || path.starts_with("/assets/");
    if !open && !guard.authenticated(headers) {
        if !api {
            return Redirect::to("/login").into_response();
        }
        return refuse(Status::unauthenticated(
            "this web UI is not on loopback: send `Authorization: Bearer COOKIE` with the \
             daemon's cookie (DIR/.hive/control.cookie), or log in at /login",
        ));
    }
    if !mutating || path == "/login" {
        return next.run(req).await;
    }
    let given = header_str(req.headers(), CSRF_HEADER).map(str::to_owned);
    let (req, given) = match given {
        Some(given) => (Some(req), Some(given)),
        None => form_token(req).await,
    };
    let Some(req) = req else {
        return refuse(Status::invalid_argument("a form body that cannot be read"));
    };
    if given.is_some_and(|g| access::same(g.as_bytes(), guard.csrf.as_bytes())) {
        return next.run(req).await;
    }
    refuse(Status::permission_denied(format!(
        "a request that changes something must carry the {CSRF_HEADER} header (or a `{CSRF_FIELD}` \
         form field) with the token GET /api/v1/status gives as `csrf`"
    )))
}

/// Refuses requests from another origin.
fn same_origin(headers: &HeaderMap, mutating: bool) -> Result<(), String> {
    if let Some(origin) = header_str(headers, header::ORIGIN) {
        let host = header_str(headers, header::HOST).unwrap_or_default();
        let own = format!("http://{host}");
        if !origin.eq_ignore_ascii_case(&own) {
            return Err(format!(
                "a request from {origin:?}, another origin, is refused"
            ));
        }
    }
    let site = header_str(headers, "sec-fetch-site");
    if mutating && matches!(site, Some("cross-site" | "same-site")) {
        return Err("a request from another site is refused".into());
    }
    Ok(())
}

/// Reads a form body's CSRF field; gives the request back whole.
async fn form_token(req: Request) -> (Option<Request>, Option<String>) {
    let form = header_str(req.headers(), header::CONTENT_TYPE)
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return (Some(req), None);
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
        return (None, None);
    };
    let copy = Request::from_parts(parts.clone(), Body::from(bytes.clone()));
    let token = Form::<HashMap<String, String>>::from_request(copy, &())
        .await
        .ok()
        .and_then(|Form(mut fields)| fields.remove(CSRF_FIELD));
    (Some(Request::from_parts(parts, Body::from(bytes))), token)
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn guard(addr: &str, secret: Option<&str>) -> Guard {
        Guard::new(
            addr.parse().unwrap(),
            secret.map(str::to_owned),
            vec!["Peer.Example".into()],
        )
        .unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_host_check_is_the_shared_one() {
        let g = guard("127.0.0.1:8080", None);
        assert!(g.host_ok(&headers(&[("host", "peer.example:1")])).is_ok());
        let why = g.host_ok(&headers(&[("host", "a.example")])).unwrap_err();
        assert!(
            why.contains("start the peer with --web-allow-host a.example"),
            "{why}"
        );
    }

    #[test]
    fn another_origin_is_refused() {
        let own = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert!(same_origin(&own, true).is_ok());
        let other = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
        ]);
        assert!(same_origin(&other, false).is_err());
        let cross = headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")]);
        assert!(same_origin(&cross, true).is_err());
        assert!(
            same_origin(&cross, false).is_ok(),
            "a link from elsewhere opens the page"
        );
    }

    #[test]
    fn off_loopback_the_secret_or_the_session_is_needed() {
        let g = guard("0.0.0.0:8080", Some("s3cret"));
        assert!(g.locked());
        assert!(!g.authenticated(&HeaderMap::new()));
        assert!(!g.authenticated(&headers(&[("authorization", "Bearer nope")])));
        assert!(g.authenticated(&headers(&[("authorization", "Bearer s3cret")])));
        assert!(g.login("nope").is_none());
        let cookie = g.login("s3cret").unwrap();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        let value = cookie.split(';').next().unwrap();
        assert!(g.authenticated(&headers(&[("cookie", &format!("a=b; {value}"))])));
        assert!(!g.authenticated(&headers(&[("cookie", "hive_session=forged")])));
        // On loopback, nothing is needed.
        assert!(guard("127.0.0.1:1", Some("s3cret")).authenticated(&HeaderMap::new()));
    }
}
