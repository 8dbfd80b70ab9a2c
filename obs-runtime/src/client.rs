//! Outgoing HTTP calls as `CLIENT` spans: a [reqwest-middleware](https://docs.rs/reqwest-middleware)
//! middleware for reqwest (feature `reqwest-middleware`), and a tower layer for clients built on
//! tower and `http` types, such as hyper-util's (feature `http`).
//!
//! Added once where the client is built, [`ClientTelemetry`] (or [`ClientTelemetryLayer`]) makes
//! each request:
//!
//! - a `CLIENT` span, a child of the current span, per OpenTelemetry's HTTP client conventions:
//!   named by the method (`POST`), with `http.request.method`, `server.address`, `server.port`,
//!   `url.full` (userinfo and every query value replaced by `REDACTED`, the path scrubbed as
//!   text), `http.response.status_code`, `error.type` (the status code from 400 on, else the
//!   transport error's kind: `timeout`, `connect`, `request`, …), and, with reqwest-middleware,
//!   `http.request.resend_count` from the second attempt on (place the middleware after a retry
//!   middleware to see each attempt);
//! - `traceparent`/`tracestate` (and `baggage`) headers naming **that** span as the parent, so
//!   the called service's server span is its child;
//! - an observation of the catalog histogram given to [`ClientTelemetry::duration`], labelled
//!   by any of `method`, `server` (`server.address`) and `status_class` (`2xx` … `5xx`, or
//!   `error` when no response came).
//!
//! A response from 400 on and a transport error mark the span failed (the conventions' rule for
//! client spans). A header the caller set is replaced, not duplicated.
//!
//! ```no_run
//! # #[cfg(feature = "reqwest-middleware")]
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use obs_runtime::client::ClientTelemetry;
//!
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(ClientTelemetry::new()) // add `.duration(metric_def!("…"))` for the histogram
//!     .build();
//! let response = client.post("http://127.0.0.1:9000/v1/checkout/sessions").send().await?;
//! # let _ = response;
//! # Ok(())
//! # }
//! ```

use std::time::Instant;

use crate::metrics::{Def, Family, FilledBy, by, kind};
use crate::trace::{Kind, SpanSite, SpanState};

/// The reqwest-middleware middleware, and what [`ClientTelemetryLayer`] is made of; see the
/// [module](self) documentation.
#[derive(Clone, Default)]
pub struct ClientTelemetry {
    duration: Option<(&'static Family, [Slot; 3])>,
}

impl std::fmt::Debug for ClientTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTelemetry").field("duration", &self.duration.map(|(f, _)| f.def().name)).finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Method,
    Server,
    StatusClass,
    None,
}

impl ClientTelemetry {
    /// Spans only, no metric.
    pub fn new() -> Self {
        Self::default()
    }

    /// Each request's duration in seconds, until the response's headers (or the error): a
    /// histogram labelled by any of `method`, `server` and `status_class` (another kind or label
    /// is a compile error).
    pub fn duration<L: FilledBy<by::HttpClient>>(mut self, def: Def<kind::Histogram, L>) -> Self {
        let def = def.get();
        let slots = crate::metrics::label_slots(
            def,
            "the HTTP client middleware",
            &[("method", Slot::Method), ("server", Slot::Server), ("status_class", Slot::StatusClass)],
            Slot::None,
        );
        self.duration = Some((crate::metrics::registry().family(def), slots));
        self
    }
}

/// How many times this request went through the middleware before (a retry middleware runs
/// the rest of the chain again with the same extensions).
#[cfg(feature = "reqwest-middleware")]
#[derive(Clone, Copy)]
struct Attempts(u32);

/// The span's name and the metric's `method`: OpenTelemetry's known methods, `_OTHER` else.
fn method_name(method: &http::Method) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE"];
    KNOWN.iter().copied().find(|m| *m == method.as_str()).unwrap_or("_OTHER")
}

fn site(method: &'static str) -> &'static SpanSite {
    macro_rules! sites {
        ($($m:literal),*) => {
            &[$(SpanSite { name: $m, level: crate::trace::Level::Info, kind: Kind::Client }),*]
        };
    }
    static SITES: &[SpanSite] = sites!("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE");
    static OTHER: SpanSite = SpanSite { name: "HTTP", level: crate::trace::Level::Info, kind: Kind::Client };
    SITES.iter().find(|s| s.name == method).unwrap_or(&OTHER)
}

/// A URL as `url.full` may show it: userinfo and query values replaced by `REDACTED` (as
/// OpenTelemetry's conventions write it), the path scrubbed as text, no fragment.
fn url_full(scheme: &str, userinfo: bool, authority: &str, path: &str, query: Option<&str>) -> String {
    let mut out = String::with_capacity(scheme.len() + authority.len() + path.len() + 16);
    out.push_str(scheme);
    out.push_str("://");
    if userinfo {
        out.push_str("REDACTED:REDACTED@");
    }
    out.push_str(authority);
    out.push_str(&crate::scrub::scrub_text(path));
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((key, _)) => {
                    out.push_str(&crate::scrub::scrub_text(key));
                    out.push_str("=REDACTED");
                }
                // A bare item (`?ana.silva`) may be a value itself.
                None => out.push_str("REDACTED"),
            }
        }
    }
    out
}

/// The text of a request's failure without the URL reqwest's own message quotes (its query
/// values and path may carry personal data that `url.full` hides): the kind, then the chain of
/// causes (hyper's, the OS's), scrubbed as text when recorded.
#[cfg(feature = "reqwest-middleware")]
fn error_text(e: &reqwest_middleware::Error) -> String {
    match e {
        reqwest_middleware::Error::Reqwest(e) => {
            let mut text = String::from("request failed");
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
        reqwest_middleware::Error::Middleware(e) => format!("{e:#}"),
    }
}

/// `error.type` of a request that got no response.
#[cfg(feature = "reqwest-middleware")]
fn transport_error(e: &reqwest_middleware::Error) -> &'static str {
    match e {
        reqwest_middleware::Error::Reqwest(e) if e.is_timeout() => "timeout",
        reqwest_middleware::Error::Reqwest(e) if e.is_connect() => "connect",
        reqwest_middleware::Error::Reqwest(e) if e.is_redirect() => "redirect",
        reqwest_middleware::Error::Reqwest(e) if e.is_body() || e.is_decode() => "body",
        reqwest_middleware::Error::Reqwest(_) => "request",
        reqwest_middleware::Error::Middleware(_) => "middleware",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// One call in flight: its span, its start, and what its metric needs.
struct Call {
    span: SpanState,
    start: Instant,
    method: &'static str,
    /// The metric's `server` label, kept past the request (which the call consumes).
    server: Option<String>,
    duration: Option<(&'static Family, [Slot; 3])>,
    /// Ended by [`finish`](Call::finish); dropped before that, the call was cancelled.
    done: bool,
}

impl Drop for Call {
    /// A call whose future was dropped before an answer (a timeout around it, a client gone):
    /// failed as `cancelled`, and timed, so that slow calls given up on still show in the metric.
    fn drop(&mut self) {
        if !self.done {
            self.end(Err(("cancelled", "the call was dropped before an answer".to_owned())));
        }
    }
}

/// What a call is made of, read from the request.
struct Target<'a> {
    method: &'a http::Method,
    scheme: &'a str,
    userinfo: bool,
    host: &'a str,
    port: Option<u16>,
    /// `host[:port]` as written.
    authority: &'a str,
    path: &'a str,
    query: Option<&'a str>,
}

impl Call {
    fn start(telemetry: &ClientTelemetry, t: &Target<'_>, resends: u32) -> Call {
        let method = method_name(t.method);
        let mut span = SpanState::start(site(method));
        if span.is_recording() {
            span.set_clean_attribute("http.request.method", method);
            if method == "_OTHER" {
                span.set_attribute("http.request.method_original", t.method.as_str().to_owned());
            }
            span.set_attribute("server.address", t.host.to_owned());
            if let Some(port) = t.port {
                span.set_clean_attribute("server.port", i64::from(port));
            }
            span.set_clean_attribute("url.full", url_full(t.scheme, t.userinfo, t.authority, t.path, t.query));
            if resends > 0 {
                span.set_clean_attribute("http.request.resend_count", i64::from(resends));
            }
        }
        let server = telemetry.duration.map(|_| t.host.to_owned());
        Call { span, start: Instant::now(), method, server, duration: telemetry.duration, done: false }
    }

    /// Writes the propagation headers into `headers`, naming this call's span as the parent
    /// (made current just for this, not the caller's span).
    fn inject(&mut self, headers: &mut http::HeaderMap) {
        let prev = self.span.swap_in();
        let outgoing = crate::trace::outgoing_headers();
        self.span.swap_out(prev);
        for (name, value) in outgoing {
            if let Ok(value) = http::HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }

    /// Ends the call with a response's status, or an error: `(error.type, message)`.
    fn finish(mut self, outcome: Result<u16, (&'static str, String)>) {
        self.end(outcome);
    }

    fn end(&mut self, outcome: Result<u16, (&'static str, String)>) {
        self.done = true;
        let elapsed = self.start.elapsed();
        let class = match outcome {
            Ok(status) => {
                self.span.set_clean_attribute("http.response.status_code", i64::from(status));
                if status >= 400 {
                    if self.span.is_recording() {
                        self.span.set_clean_attribute("error.type", status.to_string());
                    }
                    self.span.fail_typed("http", || format!("HTTP {status}"));
                }
                status_class(status)
            }
            Err((kind, message)) => {
                self.span.set_clean_attribute("error.type", kind);
                self.span.fail_typed(kind, || message);
                "error"
            }
        };
        if let Some((family, slots)) = &self.duration {
            crate::metrics::series_by_slots(family, slots, |s| match s {
                Slot::Method => self.method,
                Slot::Server => self.server.as_deref().unwrap_or(""),
                Slot::StatusClass => class,
                Slot::None => "",
            })
            .observe_with(elapsed.as_secs_f64(), self.span.exemplar_ids());
        }
    }
}

#[cfg(feature = "reqwest-middleware")]
#[async_trait::async_trait]
impl reqwest_middleware::Middleware for ClientTelemetry {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        if crate::is_off() {
            return next.run(req, extensions).await;
        }
        let resends = match extensions.get_mut::<Attempts>() {
            Some(a) => {
                a.0 += 1;
                a.0
            }
            None => {
                extensions.insert(Attempts(0));
                0
            }
        };
        let url = req.url();
        let host = url.host_str().unwrap_or("");
        let authority = match url.port() {
            Some(port) => std::borrow::Cow::Owned(format!("{host}:{port}")),
            None => std::borrow::Cow::Borrowed(host),
        };
        let target = Target {
            method: req.method(),
            scheme: url.scheme(),
            userinfo: !url.username().is_empty() || url.password().is_some(),
            host,
            port: url.port_or_known_default(),
            authority: &authority,
            path: url.path(),
            query: url.query(),
        };
        let mut call = Call::start(self, &target, resends);
        call.inject(req.headers_mut());
        let result = next.run(req, extensions).await;
        let outcome = match &result {
            Ok(response) => Ok(response.status().as_u16()),
            Err(e) => Err((transport_error(e), error_text(e))),
        };
        call.finish(outcome);
        result
    }
}

/// [`ClientTelemetry`] as a tower layer, for clients that send `http::Request`s through tower
/// services (hyper-util's `Client`, tonic's channels for plain HTTP, a `tower::ServiceBuilder`
/// stack). The request's URI must be absolute (`http://host:port/path`), as clients send it.
/// An error of the inner service fails the span with `error.type` its type's fully qualified
/// name.
///
/// ```
/// use obs_runtime::client::{ClientTelemetry, ClientTelemetryLayer};
///
/// let layer = ClientTelemetryLayer::new(ClientTelemetry::new());
/// // tower::ServiceBuilder::new().layer(layer).service(hyper_util_client)
/// # let _ = layer;
/// ```
#[cfg(feature = "http")]
#[derive(Clone, Debug, Default)]
pub struct ClientTelemetryLayer {
    telemetry: ClientTelemetry,
}

#[cfg(feature = "http")]
impl ClientTelemetryLayer {
    /// The layer, recording as `telemetry` says.
    pub fn new(telemetry: ClientTelemetry) -> Self {
        ClientTelemetryLayer { telemetry }
    }
}

#[cfg(feature = "http")]
impl<S> tower_layer::Layer<S> for ClientTelemetryLayer {
    type Service = ClientTelemetryService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientTelemetryService { inner, telemetry: self.telemetry.clone() }
    }
}

/// The service [`ClientTelemetryLayer`] wraps a client in.
#[cfg(feature = "http")]
#[derive(Clone, Debug)]
pub struct ClientTelemetryService<S> {
    inner: S,
    telemetry: ClientTelemetry,
}

#[cfg(feature = "http")]
impl<S, B, RB> tower_service::Service<http::Request<B>> for ClientTelemetryService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Error: std::fmt::Display,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if crate::is_off() {
            return Box::pin(self.inner.call(req));
        }
        let uri = req.uri();
        // A path-only URI (the client adds scheme and host itself): the `Host` header says where.
        let host_header = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok());
        let full = uri.authority().map(|a| a.as_str()).or(host_header).unwrap_or("");
        let (userinfo, host_port) = match full.rsplit_once('@') {
            Some((_, rest)) => (true, rest),
            None => (false, full),
        };
        let scheme = uri.scheme_str().unwrap_or("http");
        let default_port = match scheme {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        };
        let target = Target {
            method: req.method(),
            scheme,
            userinfo,
            host: uri.host().unwrap_or_else(|| host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)),
            port: uri
                .port_u16()
                .or_else(|| host_port.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
                .or(default_port),
            authority: host_port,
            path: uri.path(),
            query: uri.query(),
        };
        let mut call = Call::start(&self.telemetry, &target, 0);
        call.inject(req.headers_mut());
        let response = self.inner.call(req);
        Box::pin(async move {
            let result = response.await;
            let outcome = match &result {
                Ok(r) => Ok(r.status().as_u16()),
                Err(e) => Err((short_type_name::<S::Error>(), e.to_string())),
            };
            call.finish(outcome);
            result
        })
    }
}

/// A type's fully qualified name without its generic arguments
/// (`hyper_util::client::legacy::client::Error`): `error.type` for an error of the inner
/// service, as the conventions ask (low cardinality, the fully qualified type); `_OTHER` for a
/// boxed error, whose name says nothing.
#[cfg(feature = "http")]
fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let name = full.split('<').next().unwrap_or(full);
    if name == "alloc::boxed::Box" { "_OTHER" } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_full_hides_userinfo_and_query_values() {
        let full = url_full("https", true, "api.example.org:8443", "/v1/x", Some("token=abc&email=a%40b.org&flag"));
        assert_eq!(full, "https://REDACTED:REDACTED@api.example.org:8443/v1/x?token=REDACTED&email=REDACTED&REDACTED");
        assert_eq!(
            url_full("http", false, "127.0.0.1:9000", "/v1/checkout", None),
            "http://127.0.0.1:9000/v1/checkout"
        );
        // An email in the path is scrubbed as text.
        let path = url_full("http", false, "h", "/users/ana@example.org/x", None);
        assert!(!path.contains("ana@example.org"), "{path}");
    }

    #[cfg(feature = "http")]
    #[test]
    fn error_types_of_inner_services() {
        assert_eq!(short_type_name::<std::io::Error>(), "std::io::error::Error");
        assert_eq!(short_type_name::<Box<dyn std::error::Error + Send + Sync>>(), "_OTHER");
    }

    #[test]
    fn methods_and_classes() {
        assert_eq!(method_name(&http::Method::POST), "POST");
        assert_eq!(method_name(&http::Method::from_bytes(b"PURGE").unwrap()), "_OTHER");
        assert_eq!(site("_OTHER").name, "HTTP");
        assert_eq!(site("PATCH").name, "PATCH");
        assert_eq!((status_class(204), status_class(404), status_class(503)), ("2xx", "4xx", "5xx"));
    }
}
