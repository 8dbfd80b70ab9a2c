//! The viewer's routes.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Settings;
use super::page::{self, Params, Reply};

/// The cookie a page opened with `?token=` leaves, so that its links and polling need no header.
const COOKIE: &str = "obs_viewer";

/// The viewer's routes under `/debug/obs`, to merge into the application's router (see the
/// [module](crate::viewer) for the pages). With a token (`OBS_VIEWER_TOKEN`), a request needs
/// `Authorization: Bearer <token>`, or opens a page once with `?token=<token>` (which leaves a
/// cookie for that path); a disabled viewer answers 404.
pub fn router<S: Clone + Send + Sync + 'static>(settings: Settings) -> axum::Router<S> {
    axum::Router::new()
        .route("/debug/obs", get(serve))
        .route("/debug/obs/", get(serve))
        .route("/debug/obs/{*path}", get(serve))
        .with_state(Arc::new(settings))
}

async fn serve(State(s): State<Arc<Settings>>, headers: HeaderMap, uri: Uri, Query(p): Query<Params>) -> Response {
    if !s.enabled {
        return reply(Reply::text(404, "the viewer is off (OBS_VIEWER=true turns it on)"));
    }
    // Another site's page may link here (a navigation), not read or start anything (a fetch, an
    // image: what browsers mark `Sec-Fetch-Site: cross-site` and not `navigate`).
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    if header("sec-fetch-site") == "cross-site" && header("sec-fetch-mode") != "navigate" {
        return reply(Reply::text(403, "the viewer answers its own pages only"));
    }
    if s.token.is_none() && !loopback(header("host")) {
        // Without a token, only this machine: a page elsewhere whose name was pointed at this
        // address (DNS rebinding) gets nothing.
        return reply(Reply::text(
            403,
            "without a token the viewer answers on localhost only: set OBS_VIEWER_TOKEN to open it from elsewhere",
        ));
    }
    if let Some(token) = &s.token {
        if let Some(given) = p.get("token") {
            if !same(given.trim(), token) {
                return unauthorized();
            }
            // Into a cookie, and off the address bar (and out of the history).
            let mut r = Response::new(axum::body::Body::empty());
            *r.status_mut() = StatusCode::SEE_OTHER;
            // The same page, its other parameters kept as they came.
            let rest: Vec<&str> = uri
                .query()
                .unwrap_or("")
                .split('&')
                .filter(|kv| !kv.is_empty() && decoded_key(kv) != "token")
                .collect();
            let location =
                if rest.is_empty() { uri.path().to_owned() } else { format!("{}?{}", uri.path(), rest.join("&")) };
            r.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_str(&location).unwrap_or(HeaderValue::from_static("/debug/obs")),
            );
            // `Lax`: the page a link from a chat or a dashboard opens gets it at once. `Secure`
            // when the request came over TLS, to this server or to a proxy in front of it
            // (`X-Forwarded-Proto`): the browser then never sends the token over plain HTTP. Not
            // otherwise: over plain HTTP a `Secure` cookie would never come back.
            let tls = uri.scheme_str() == Some("https")
                || header("x-forwarded-proto")
                    .split(',')
                    .next()
                    .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
            let secure_flag = if tls { "; Secure" } else { "" };
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{COOKIE}={token}; Path=/debug/obs; HttpOnly; SameSite=Lax{secure_flag}"
            )) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            secure(r.headers_mut());
            return r;
        }
        if !admitted(&headers, token) {
            return unauthorized();
        }
    }
    let path = uri.path().trim_start_matches("/debug/obs").trim_end_matches('/');
    match path {
        "" => reply(page::traces(&s, &p)),
        "/metrics" => reply(page::metrics(&s, &p)),
        "/logs" => reply(page::logs(&s, &p)),
        "/profile" => reply(page::profile(&s)),
        "/usage" => reply(page::usage_text()),
        "/version" => reply(page::version_text()),
        "/app.js" => asset("text/javascript; charset=utf-8", include_str!("app.js")),
        "/app.css" => asset("text/css; charset=utf-8", include_str!("app.css")),
        "/api/traces" => reply(page::traces_json(&p)),
        "/api/metrics" => reply(page::metrics_json()),
        "/api/logs" => reply(page::logs_json(&p)),
        "/api/profile.svg" => profile(&s, &p).await,
        "/api/profile/last.svg" => last_profile(),
        other => match (other.strip_prefix("/traces/"), other.strip_prefix("/api/traces/")) {
            (Some(id), _) => reply(page::trace(&s, id)),
            (_, Some(id)) => reply(page::trace_json(id)),
            _ => reply(Reply::text(404, "no such page of the viewer: see /debug/obs")),
        },
    }
}

/// A query pair's key, decoded as a form decodes it (`%74oken` is `token`, `+` a space).
fn decoded_key(pair: &str) -> String {
    let key = pair.split('=').next().unwrap_or("");
    crate::scrub::percent_decode(&key.replace('+', " "))
}

/// Whether a `Host` header names this machine (`localhost`, a loopback address; any port).
fn loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host
            .rsplit_once(':')
            .map_or(host, |(name, port)| if port.bytes().all(|b| b.is_ascii_digit()) { name } else { host }),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn same(given: &str, token: &str) -> bool {
    // An empty token never matches (a request without one gives an empty one).
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, &byte) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ byte);
    }
    !token.is_empty() && diff == 0
}

fn admitted(headers: &HeaderMap, token: &str) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")))
        .map(|(_, t)| t.trim());
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE).and_then(|c| c.strip_prefix('=')));
    bearer.is_some_and(|t| same(t, token)) || cookie.is_some_and(|t| same(t, token))
}

fn unauthorized() -> Response {
    let mut r = reply(Reply::text(
        401,
        "the viewer needs its token: `Authorization: Bearer <token>`, or open /debug/obs?token=<token> once",
    ));
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn reply(r: Reply) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, [(header::CONTENT_TYPE, r.content_type)], r.body).into_response();
    secure(resp.headers_mut());
    resp
}

/// Scripts only from the viewer itself, not framed by another site; never cached (it is live
/// data).
fn secure(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-src \
             'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = reply(Reply { status: 200, content_type, body: String::new() });
    *r.body_mut() = axum::body::Body::from(body);
    r
}

/// The last profile taken here, shown by the page in a frame of its own (where the flamegraph's
/// own script, for zoom and search, may run).
static LAST_PROFILE: std::sync::Mutex<Option<bytes::Bytes>> = std::sync::Mutex::new(None);

fn svg(body: bytes::Bytes) -> Response {
    let mut r = (StatusCode::OK, [(header::CONTENT_TYPE, "image/svg+xml")], body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        // Its own script (zoom, search) runs, in an origin of its own (`sandbox`).
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; sandbox allow-scripts; \
             frame-ancestors 'self'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

fn last_profile() -> Response {
    match super::store::lock(&LAST_PROFILE).clone() {
        Some(body) => svg(body),
        None => reply(Reply::text(404, "no profile taken yet")),
    }
}

#[cfg(feature = "profiling")]
async fn profile(s: &Settings, p: &Params) -> Response {
    use crate::profile::{Format, ProfileError, ProfileRequest, take_async};
    let seconds = match p.get("seconds").map(|v| v.trim()) {
        None => 10,
        Some(v) => match v.parse::<u64>() {
            Ok(n @ 1..=60) => n,
            _ => return reply(Reply::text(400, format!("`seconds` is a whole number from 1 to 60; got `{v}`"))),
        },
    };
    let req = ProfileRequest::new(std::time::Duration::from_secs(seconds)).frequency(s.frequency);
    match take_async(req).await {
        Ok(profile) => {
            let body = bytes::Bytes::from(profile.render(Format::Flamegraph));
            *super::store::lock(&LAST_PROFILE) = Some(body.clone());
            svg(body)
        }
        Err(e @ ProfileError::Busy) => reply(Reply::text(409, e.to_string())),
        Err(e @ ProfileError::Stopped) => reply(Reply::text(503, e.to_string())),
        Err(e) => reply(Reply::text(500, e.to_string())),
    }
}

#[cfg(not(feature = "profiling"))]
async fn profile(_: &Settings, _: &Params) -> Response {
    reply(Reply::text(501, "this build has no profiler: obs-runtime's `profiling` feature adds it"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "localhost:8000",
            "LOCALHOST",
            "app.localhost:3000",
            "127.0.0.1:8000",
            "127.9.9.9",
            "[::1]:8000",
            "[::1]",
        ] {
            assert!(loopback(host), "{host}");
        }
        for host in
            ["", "revel", "evil.example:8000", "10.0.0.1:8000", "localhost.evil.example", "[::2]:80", "0.0.0.0:8000"]
        {
            assert!(!loopback(host), "{host}");
        }
    }

    #[test]
    fn query_keys_are_compared_decoded() {
        assert_eq!(decoded_key("token=x"), "token");
        assert_eq!(decoded_key("%74oken=x"), "token");
        assert_eq!(decoded_key("%74%6F%6b%65%6e"), "token");
        assert_eq!(decoded_key("a+b=c"), "a b");
        assert_eq!(decoded_key("50%=x"), "50%");
        assert_eq!(decoded_key("%zz"), "%zz");
    }
}
