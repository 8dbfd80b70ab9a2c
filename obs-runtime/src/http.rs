//! Per-request context for HTTP services: a tower layer (feature `http`; route templates and peer
//! addresses from axum with the feature `axum`).
//!
//! For every request [`ObsLayer`]:
//! - takes a valid incoming `X-Request-ID` (at most 128 characters of `A-Z a-z 0-9 - _ . :`) or
//!   generates one, and returns it as `X-Request-ID` on every response, errors and panics
//!   included;
//! - continues the caller's trace from `traceparent`/`tracestate` (malformed headers start a new
//!   trace) with a server span named `{method} {route}` (`{method}` when no route matched),
//!   carrying, as OpenTelemetry's HTTP conventions name them, `http.request.method`, `http.route`
//!   (when a route matched), `url.scheme`, `url.path`, `http.response.status_code`,
//!   `user_agent.original`, `client.address` and `http.request.header.x-request-id`; a 5xx
//!   response (`error.type` = the status code), an error or a panic marks it failed;
//! - binds `request_id`, `user_id`, `ip_address`, `user_agent`, `method`, `path` and `endpoint`
//!   to every log line written while the request is handled, and logs one access line when it
//!   completes (`target: "obs::access"`);
//! - records the request counter and duration histogram you name, labelled by method, route
//!   template and status code. Requests no route matched share the endpoint `unmatched`, so a
//!   scanner cannot create a series per path.
//!
//! With axum, wrap the finished router with [`ObsLayer::wrap`]: every request is seen, 404s of
//! merged routers and panics included, and route templates still come from axum.
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use axum::{Router, routing::get};
//! use obs_runtime::http::ObsLayer;
//!
//! let app: Router = Router::new().route("/events/{id}", get(|| async { "ok" }));
//! let service = ObsLayer::new()
//!     .request_metrics(
//!         obs_runtime::metric_def!("shop_http_requests_total"),
//!         obs_runtime::metric_def!("shop_http_request_duration_seconds"),
//!     )
//!     .trust_proxies(["10.0.0.0/8"]).unwrap()
//!     .user_id(|req| req.headers.get("x-user-id")?.to_str().ok().map(str::to_owned))
//!     .wrap(app);
//! # let _ = service; }
//! ```
//!
//! Any other tower service takes it as a layer (`tower::Layer::layer`, `ServiceBuilder`), with
//! [`ObsLayer::route`] to name routes.
//!
//! Malformed headers are never echoed or trusted: an invalid request id is replaced, a non-UTF-8
//! or oversized `User-Agent` is recorded as `[invalid]` or truncated, forwarded addresses are read
//! only from the proxies you trust. Everything recorded is scrubbed like all telemetry.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderValue, Request, Response};

use crate::metrics::{Def, Family, FilledBy, by, kind};
use crate::trace::{RemoteContext, SpanSite, SpanState};

/// The response header (and request header) carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";
/// [`REQUEST_ID`] as a header name (not parsed again on every request).
const REQUEST_ID_NAME: http::HeaderName = http::HeaderName::from_static(REQUEST_ID);
const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");
const BAGGAGE: http::HeaderName = http::HeaderName::from_static("baggage");
/// The endpoint label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";
/// Longest request id taken from a client.
const MAX_REQUEST_ID: usize = 128;
/// Longest user agent recorded.
const MAX_USER_AGENT: usize = 256;

/// The request id of the request being handled, in the request's extensions (for handlers:
/// `Extension<RequestId>` in axum).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

type UserIdFn = Arc<dyn Fn(&http::request::Parts) -> Option<String> + Send + Sync>;
type RouteFn = Arc<dyn Fn(&http::request::Parts) -> Option<String> + Send + Sync>;

/// A proxy address or network (`10.0.0.1`, `10.0.0.0/8`, `fd00::/8`) whose `X-Forwarded-For`
/// and `Forwarded` headers are believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustedProxy {
    net: IpAddr,
    prefix: u8,
}

/// A proxy given to [`ObsLayer::trust_proxies`] that is neither an IP address nor a CIDR
/// network; its message names the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidProxy(String);

impl fmt::Display for InvalidProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a proxy address: expected an IP address or a CIDR network, e.g. 10.0.0.0/8", self.0)
    }
}

impl std::error::Error for InvalidProxy {}

impl std::str::FromStr for TrustedProxy {
    type Err = InvalidProxy;

    fn from_str(s: &str) -> Result<Self, InvalidProxy> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let expected = || InvalidProxy(s.to_owned());
        let net: IpAddr = addr.parse().map_err(|_| expected())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(expected)?,
        };
        Ok(TrustedProxy { net, prefix })
    }
}

impl TrustedProxy {
    fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, true),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (u128::from(u32::from(v4)) << 96, true),
                None => (u128::from(v6), false),
            },
        };
        let ((net, net4), (addr, addr4)) = (bits(self.net), bits(ip));
        if net4 != addr4 {
            return false;
        }
        // An IPv4-mapped network (`::ffff:10.0.0.0/104`) counts its prefix over 128 bits.
        let prefix = match self.net {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => self.prefix.saturating_sub(96),
            _ => self.prefix,
        } as u32;
        prefix == 0 || (net ^ addr) >> (128 - prefix) == 0
    }
}

/// The header trusted proxies name the client in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (nginx, HAProxy, cloud load balancers): the default.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=…`.
    Forwarded,
}

/// Settings shared by every request.
#[derive(Clone)]
struct Settings {
    requests: Option<(&'static Family, [Slot; 3])>,
    duration: Option<(&'static Family, [Slot; 3])>,
    user_id: Option<UserIdFn>,
    route: Option<RouteFn>,
    trusted: Vec<TrustedProxy>,
    forwarded: ForwardedHeader,
    access_log: bool,
    /// The layer wraps a whole router ([`ObsLayer::wrap`]): the route becomes known after `call`.
    late_route: bool,
}

/// Which request value fills a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Method,
    Endpoint,
    Status,
    None,
}

/// The tower layer; see the [module](self) documentation.
#[derive(Clone)]
pub struct ObsLayer {
    settings: Arc<Settings>,
}

impl Default for ObsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ObsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObsLayer").field("trusted_proxies", &self.settings.trusted).finish_non_exhaustive()
    }
}

impl ObsLayer {
    /// Request ids, context, the server span and the access log; no metrics until
    /// [`request_metrics`](Self::request_metrics).
    pub fn new() -> Self {
        ObsLayer {
            settings: Arc::new(Settings {
                requests: None,
                duration: None,
                user_id: None,
                route: None,
                trusted: Vec::new(),
                forwarded: ForwardedHeader::XForwardedFor,
                access_log: true,
                late_route: false,
            }),
        }
    }

    /// Changes this layer only: a clone taken before keeps its settings.
    fn edit(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        f(Arc::make_mut(&mut self.settings));
        self
    }

    /// Counts requests into `requests` (a counter labelled by any of `method`, `endpoint`,
    /// `status_code`) and observes their duration in seconds into `duration` (a histogram
    /// labelled by any of `method`, `endpoint`, `status_code`); take them from your catalog with
    /// [`metric_def!`](crate::metric_def). Another kind or label is a compile error.
    pub fn request_metrics<R, D>(self, requests: Def<kind::Counter, R>, duration: Def<kind::Histogram, D>) -> Self
    where
        R: FilledBy<by::HttpServer>,
        D: FilledBy<by::HttpServer>,
    {
        let (requests, duration) = (requests.get(), duration.get());
        let labels = [("method", Slot::Method), ("endpoint", Slot::Endpoint), ("status_code", Slot::Status)];
        let r = crate::metrics::label_slots(requests, "the HTTP layer", &labels, Slot::None);
        let d = crate::metrics::label_slots(duration, "the HTTP layer", &labels, Slot::None);
        let registry = crate::metrics::registry();
        let (rf, df) = (registry.family(requests), registry.family(duration));
        crate::metrics::note_http_server(rf, df);
        self.edit(|s| {
            s.requests = Some((rf, r));
            s.duration = Some((df, d));
        })
    }

    /// How to find the user of a request (authentication is the application's), e.g. from a
    /// header your gateway sets or a session. Handlers can also set it later with
    /// [`set_user_id`].
    pub fn user_id(self, f: impl Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static) -> Self {
        self.edit(|s| s.user_id = Some(Arc::new(f)))
    }

    /// The route template of a request (`/items/{id}`, never the path itself: it labels metrics
    /// and names spans), for a service whose router is not axum's; with the `axum` feature,
    /// axum's `MatchedPath` comes first. `None`, or no function, means no route matched
    /// ([`UNMATCHED`]).
    ///
    /// ```
    /// let layer = obs_runtime::http::ObsLayer::new()
    ///     .route(|req| req.uri.path().starts_with("/items/").then(|| "/items/{id}".to_owned()));
    /// ```
    pub fn route(self, f: impl Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static) -> Self {
        self.edit(|s| s.route = Some(Arc::new(f)))
    }

    /// Proxies (addresses or CIDR networks) whose `X-Forwarded-For` / `Forwarded` headers name
    /// the client; from anyone else those headers are ignored.
    pub fn trust_proxies<'a>(self, proxies: impl IntoIterator<Item = &'a str>) -> Result<Self, InvalidProxy> {
        let parsed = proxies.into_iter().map(str::parse).collect::<Result<Vec<TrustedProxy>, _>>()?;
        Ok(self.edit(|s| s.trusted = parsed))
    }

    /// Which header the trusted proxies set (only that one is read: a client could send the
    /// other, and a proxy that does not set it would pass it on untouched).
    pub fn forwarded_header(self, header: ForwardedHeader) -> Self {
        self.edit(|s| s.forwarded = header)
    }

    /// Whether one access line is logged per request (default on).
    pub fn access_log(self, on: bool) -> Self {
        self.edit(|s| s.access_log = on)
    }

    /// Wraps a complete axum router: every request the server hands it is seen, whatever
    /// answers it (a route, a `405`, a fallback, the default `404` of a router merged in, a
    /// panic). The route template is still learned from axum's `MatchedPath`, from inside the
    /// router; requests no route matched get the endpoint [`UNMATCHED`].
    ///
    /// Prefer this to `Router::layer`: axum applies a layer only to the routes and fallback that
    /// exist when it is called, so a router merged or nested afterwards, or its default fallback,
    /// is invisible to it. The result is a tower service, not a `Router`: nothing can be added
    /// around the layer's back.
    ///
    /// ```
    /// use axum::{Router, ServiceExt, extract::Request, routing::get};
    /// use obs_runtime::http::ObsLayer;
    ///
    /// let api = Router::new().route("/events/{id}", get(|| async { "ok" }));
    /// let admin = Router::new().route("/admin/health", get(|| async { "ok" }));
    /// let service = ObsLayer::new().wrap(api.merge(admin));
    /// // Client addresses come from `ConnectInfo`; then `axum::serve(listener, make_service)`.
    /// let make_service =
    ///     ServiceExt::<Request>::into_make_service_with_connect_info::<std::net::SocketAddr>(service);
    /// # let _ = make_service;
    /// ```
    #[cfg(feature = "axum")]
    pub fn wrap(self, router: axum::Router) -> ObsService<axum::Router> {
        let layer = self.edit(|s| s.late_route = true);
        tower_layer::Layer::layer(&layer, router.layer(RecordRoute))
    }
}

/// The route a request matched, learned inside the router after the layer's `call` (the layer
/// wraps the whole router: [`ObsLayer::wrap`]).
struct RouteCell {
    route: OnceLock<Box<str>>,
    bound: Arc<crate::context::Bound>,
}

impl RouteCell {
    /// Records the matched route (the first one: a nested router sees the same request again),
    /// and puts it on the request's log context and profile label at once.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    fn record(&self, route: &str) {
        if self.route.set(route.into()).is_ok() {
            self.bound.set("endpoint", crate::context::Value::Plain(route));
            self.bound.set_profile_slot(crate::profile::slot_for("endpoint", route));
        }
    }
}

/// [`RouteCell`] in the request's extensions (read by the axum wrapper).
#[derive(Clone)]
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
struct LateRoute(Arc<RouteCell>);

/// Inside a wrapped router, around every route: tells the layer outside which route matched.
#[cfg(feature = "axum")]
#[derive(Clone, Copy)]
struct RecordRoute;

#[cfg(feature = "axum")]
impl<S> tower_layer::Layer<S> for RecordRoute {
    type Service = RecordRouteService<S>;

    fn layer(&self, inner: S) -> RecordRouteService<S> {
        RecordRouteService(inner)
    }
}

#[cfg(feature = "axum")]
#[derive(Clone)]
struct RecordRouteService<S>(S);

#[cfg(feature = "axum")]
impl<S, B> tower_service::Service<Request<B>> for RecordRouteService<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> S::Future {
        let ext = req.extensions();
        if let (Some(late), Some(matched)) = (ext.get::<LateRoute>(), ext.get::<axum::extract::MatchedPath>()) {
            late.0.record(matched.as_str());
        }
        self.0.call(req)
    }
}

impl<S> tower_layer::Layer<S> for ObsLayer {
    type Service = ObsService<S>;

    fn layer(&self, inner: S) -> ObsService<S> {
        ObsService { inner, settings: self.settings.clone() }
    }
}

/// The service [`ObsLayer`] wraps around yours.
#[derive(Clone)]
pub struct ObsService<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> std::fmt::Debug for ObsService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObsService").finish_non_exhaustive()
    }
}

#[cfg(feature = "axum")]
impl ObsService<axum::Router> {
    /// What `axum::serve` takes: this service made per connection with the peer's address
    /// (`ConnectInfo<SocketAddr>`), so that `ip_address` and `client.address` are known.
    ///
    /// ```no_run
    /// # async fn serve() -> std::io::Result<()> {
    /// let service = obs_runtime::http::ObsLayer::new().wrap(axum::Router::new());
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// axum::serve(listener, service.into_make_service()).await
    /// # }
    /// ```
    pub fn into_make_service(
        self,
    ) -> axum::extract::connect_info::IntoMakeServiceWithConnectInfo<Self, std::net::SocketAddr> {
        axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<std::net::SocketAddr>(self)
    }
}

/// Records the user of the request being handled (on its log lines from now on and on its
/// span): for applications that authenticate inside the handler.
pub fn set_user_id(user_id: &str) {
    if let Some(ctx) = crate::context::current() {
        ctx.set("user_id", crate::context::Value::Text(user_id));
    }
}

fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        // Any other method would be a label value of the client's choosing.
        _ => "_OTHER",
    }
}

/// A client's request id, if it is safe to keep: short, of a safe charset, and nothing the
/// scrubber would change (it is logged as is, as a kept id: a card number is no request id).
fn valid_request_id(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    (!s.is_empty()
        && s.len() <= MAX_REQUEST_ID
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
        && matches!(crate::scrub::scrub_text(s), std::borrow::Cow::Borrowed(_)))
    .then_some(s)
}

/// `ip` as text; IPv4 (the common case) without the formatting machinery.
fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut out = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(itoa::Buffer::new().format(octet));
            }
            out
        }
        IpAddr::V6(_) => ip.to_string(),
    }
}

/// The request id as the span attribute `http.request.header.x-request-id` (a header's values).
fn request_id_attribute(id: &str) -> opentelemetry::Value {
    opentelemetry::Value::Array(opentelemetry::Array::String(vec![id.to_owned().into()]))
}

/// A new request id: a random UUID (version 4).
fn new_request_id() -> String {
    crate::trace::uuid_v4()
}

fn user_agent(headers: &http::HeaderMap) -> String {
    match headers.get(http::header::USER_AGENT).map(|v| v.to_str()) {
        None => String::new(),
        Some(Err(_)) => "[invalid]".into(),
        Some(Ok(ua)) if ua.len() > MAX_USER_AGENT => {
            let mut end = MAX_USER_AGENT;
            while !ua.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &ua[..end])
        }
        Some(Ok(ua)) => ua.to_owned(),
    }
}

/// The client: the peer, or what trusted proxies say it is.
/// `url.scheme`: what the request says (HTTP/2's `:scheme`, an absolute URI), else what a trusted
/// proxy says its client used (`X-Forwarded-Proto`, or `proto=` in `Forwarded`), else `http` (a
/// server terminating TLS itself over HTTP/1.1 is not seen).
fn url_scheme(
    uri: &http::Uri,
    peer: Option<IpAddr>,
    headers: &http::HeaderMap,
    trusted: &[TrustedProxy],
    header: ForwardedHeader,
) -> &'static str {
    let known = |s: &str| {
        if s.eq_ignore_ascii_case("https") {
            Some("https")
        } else if s.eq_ignore_ascii_case("http") {
            Some("http")
        } else {
            None
        }
    };
    if let Some(s) = uri.scheme_str().and_then(known) {
        return s;
    }
    let from_proxy = || {
        let peer = peer?;
        if !trusted.iter().any(|t| t.contains(peer)) {
            return None;
        }
        // The nearest hop's value: the last one.
        let last = match header {
            ForwardedHeader::XForwardedFor => headers.get_all("x-forwarded-proto").iter().next_back()?.to_str().ok()?,
            ForwardedHeader::Forwarded => headers.get_all("forwarded").iter().next_back()?.to_str().ok()?,
        };
        let last = last.rsplit(',').next()?.trim();
        match header {
            ForwardedHeader::XForwardedFor => known(last),
            ForwardedHeader::Forwarded => last.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                k.trim().eq_ignore_ascii_case("proto").then(|| known(v.trim().trim_matches('"'))).flatten()
            }),
        }
    };
    from_proxy().unwrap_or("http")
}

fn client_address(
    peer: Option<IpAddr>,
    headers: &http::HeaderMap,
    trusted: &[TrustedProxy],
    header: ForwardedHeader,
) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|t| t.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    // Every hop the header names, nearest last (`None` for one that does not parse).
    let mut hops: Vec<Option<IpAddr>> = Vec::new();
    match header {
        ForwardedHeader::XForwardedFor => {
            for v in headers.get_all("x-forwarded-for") {
                let Ok(v) = v.to_str() else { return Some(peer) };
                hops.extend(v.split(',').map(|h| parse_forwarded_ip(h.trim())));
            }
        }
        ForwardedHeader::Forwarded => {
            for v in headers.get_all("forwarded") {
                let Ok(v) = v.to_str() else { return Some(peer) };
                for element in v.split(',') {
                    let for_ = element.split(';').find_map(|pair| {
                        let (k, val) = pair.trim().split_once('=')?;
                        k.trim().eq_ignore_ascii_case("for").then(|| parse_forwarded_ip(val.trim().trim_matches('"')))
                    });
                    hops.push(for_.flatten());
                }
            }
        }
    }
    // From the nearest hop outwards: the first address that is not a trusted proxy is the
    // client. A hop that does not parse ends the walk: what lies beyond it cannot be trusted,
    // so the last trusted address seen stands.
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        match hop {
            Some(ip) if is_trusted(ip) => client = ip,
            Some(ip) => return Some(ip),
            None => break,
        }
    }
    Some(client)
}

/// A path as recorded (log context, `url.path`): at most as long as a context field, so that a
/// client sending a 60 KB path cannot make 60 KB lines and span attributes of it.
fn capped(mut path: String) -> String {
    let max = crate::context::MAX_FIELD;
    if path.len() > max {
        let mut end = max;
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        path.truncate(end);
        path.push('…');
    }
    path
}

/// `192.0.2.1`, `192.0.2.1:8080`, `[2001:db8::1]:443`, `2001:db8::1`.
fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[').and_then(|r| r.split_once(']')).and_then(|(ip, _)| ip.parse().ok())
}

/// The route template that matched (axum's `MatchedPath`), and the peer address (axum's
/// `ConnectInfo<SocketAddr>`, or a `SocketAddr` extension).
#[cfg(feature = "axum")]
fn route_and_peer(ext: &http::Extensions) -> (Option<String>, Option<IpAddr>) {
    let route = ext.get::<axum::extract::MatchedPath>().map(|m| m.as_str().to_owned());
    let peer = ext
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .or_else(|| ext.get::<SocketAddr>().map(SocketAddr::ip));
    (route, peer)
}

#[cfg(not(feature = "axum"))]
fn route_and_peer(ext: &http::Extensions) -> (Option<String>, Option<IpAddr>) {
    (None, ext.get::<SocketAddr>().map(SocketAddr::ip))
}

/// The server span's site: `{method} {route}`, or `{method}` alone when no route matched (the
/// HTTP conventions' name without a low-cardinality route). A name per route template and method
/// is made once (process-wide, under a lock) and then found in a per-thread cache without
/// allocating.
fn site(method: &'static str, route: Option<&str>) -> &'static SpanSite {
    type Sites = std::collections::HashMap<Box<str>, &'static SpanSite>;
    static SITES: OnceLock<Mutex<Sites>> = OnceLock::new();
    thread_local! {
        static CACHE: std::cell::RefCell<(String, Sites)> = std::cell::RefCell::new(Default::default());
    }
    CACHE.with(|c| {
        let (name, cache) = &mut *c.borrow_mut();
        name.clear();
        name.push_str(method);
        if let Some(route) = route {
            name.push(' ');
            name.push_str(route);
        }
        if let Some(s) = cache.get(name.as_str()) {
            return *s;
        }
        let mut sites = SITES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        let s = *sites.entry(name.as_str().into()).or_insert_with(|| {
            let leaked: &'static str = Box::leak(name.as_str().into());
            Box::leak(Box::new(SpanSite {
                name: leaked,
                level: crate::trace::Level::Info,
                kind: crate::trace::Kind::Server,
            }))
        });
        cache.insert(name.as_str().into(), s);
        s
    })
}

impl<S, B, RB> tower_service::Service<Request<B>> for ObsService<S>
where
    S: tower_service::Service<Request<B>, Response = Response<RB>>,
    S::Error: std::fmt::Display,
    RB: Default,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    // Long on purpose: the request's whole start, in the order the access line and the span
    // need it (id, route, client, context, span, then the inner call), on the hot path, where
    // each value is computed once and moved on.
    fn call(&mut self, req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let settings = self.settings.clone();
        let (mut parts, body) = req.into_parts();
        let request_id = match parts.headers.get(REQUEST_ID_NAME).and_then(valid_request_id) {
            Some(id) => id.to_owned(),
            None => new_request_id(),
        };
        if crate::is_off() {
            // Observability disabled: the request id only (handlers and clients may rely on it).
            let header = HeaderValue::from_str(&request_id).expect("request ids are visible ASCII");
            parts.extensions.insert(RequestId(request_id));
            let inner = self.inner.call(Request::from_parts(parts, body));
            return ResponseFuture { inner, state: None, off: Some(header) };
        }
        let method = method_label(&parts.method);
        let (route, peer) = route_and_peer(&parts.extensions);
        let route = route.or_else(|| settings.route.as_ref().and_then(|f| f(&parts)));
        let matched = route.is_some();
        let endpoint = route.unwrap_or_else(|| UNMATCHED.to_owned());
        let scheme = url_scheme(&parts.uri, peer, &parts.headers, &settings.trusted, settings.forwarded);
        // Decoded, so that the scrubber sees `/users/ana@example.org` in `/users/ana%40example.org`.
        let path = capped(crate::scrub::percent_decode(parts.uri.path()));
        let ua = user_agent(&parts.headers);
        let client = client_address(peer, &parts.headers, &settings.trusted, settings.forwarded);
        let user = settings.user_id.as_ref().and_then(|f| f(&parts));
        // Every field of each header: two `traceparent` fields are invalid, `tracestate` fields
        // are one list. A field that is not text is not valid either.
        let remote = if crate::trace::propagating() && parts.headers.contains_key(TRACEPARENT) {
            let text = |name| parts.headers.get_all(name).iter().map(|v| v.to_str().unwrap_or("\u{0}"));
            RemoteContext::from_header_fields(text(TRACEPARENT), text(TRACESTATE))
        } else {
            None
        };

        // The context every log line of this request carries: scrubbed once, rendered once,
        // current on every poll.
        use crate::context::{Bound, Value};
        let ip = client.map(ip_text);
        let fields = [
            ("request_id", Some(Value::Text(&request_id))),
            ("user_id", user.as_deref().map(Value::Text)),
            ("ip_address", ip.as_deref().map(Value::Plain)),
            ("user_agent", Some(Value::Text(&ua))),
            ("method", Some(Value::Plain(method))),
            ("path", Some(Value::Text(&path))),
            // Wrapping a router, the route is learned inside it, and the field added then (added,
            // not replaced: replacing a field copies the others; measured 1.8k instructions).
            ("endpoint", (matched || !settings.late_route).then_some(Value::Plain(&endpoint))),
        ];
        let known = matched || !settings.late_route;
        let bound = Bound::labeled(&fields, if known { crate::profile::slot_for("endpoint", &endpoint) } else { 0 });
        let baggage_fields = parts.headers.get_all(BAGGAGE).iter().map(|v| v.to_str().unwrap_or("\u{0}"));
        let mut baggage_attributes = Vec::new();
        if parts.headers.contains_key(BAGGAGE)
            && let Some(baggage) = crate::trace::incoming_baggage(baggage_fields)
        {
            // The allow-listed keys, on every log line of the request (scrubbed when set) and
            // on its span (scrubbed when recorded).
            baggage_attributes = crate::trace::baggage_attributes(&baggage);
            for (key, value) in &baggage_attributes {
                bound.set(key, Value::Text(value));
            }
            bound.set_baggage(baggage);
        }
        let late = (!known).then(|| Arc::new(RouteCell { route: OnceLock::new(), bound: bound.clone() }));
        if let Some(cell) = &late {
            parts.extensions.insert(LateRoute(cell.clone()));
        }
        parts.extensions.insert(RequestId(request_id.clone()));

        let site = site(method, matched.then_some(endpoint.as_str()));
        // Sampling rules may match the route (or, when it is learned later, the path) and method.
        let facts = crate::trace::sampling::Http {
            method,
            path: parts.uri.path(),
            route: matched.then_some(endpoint.as_str()),
        };
        let mut span = match &remote {
            Some(r) => r.in_scope(|| SpanState::start_http(site, &facts)),
            None => SpanState::start_http(site, &facts),
        };
        // The service may start work synchronously in `call`: it runs in the request's context.
        let tracestate: Option<Arc<str>> = remote.as_ref().and_then(|r| r.tracestate().map(Arc::from));
        let inner =
            span.run_in(Some(bound.clone()), tracestate.clone(), || self.inner.call(Request::from_parts(parts, body)));
        let mut state = InFlight {
            span,
            baggage_attributes,
            bound,
            tracestate,
            start,
            method,
            matched,
            endpoint,
            scheme,
            path,
            ua,
            client,
            request_id,
            settings,
            late,
        };
        if state.span.is_recording() {
            state.span_attributes();
        }
        ResponseFuture { inner, state: Some(state), off: None }
    }
}

/// What a request in flight needs when it ends.
struct InFlight {
    span: SpanState,
    /// The allow-listed baggage members (`Config::baggage_attributes`), for the span.
    baggage_attributes: Vec<(&'static str, String)>,
    bound: Arc<crate::context::Bound>,
    tracestate: Option<Arc<str>>,
    start: Instant,
    method: &'static str,
    /// A route matched (else `endpoint` is [`UNMATCHED`]).
    matched: bool,
    endpoint: String,
    scheme: &'static str,
    path: String,
    ua: String,
    client: Option<IpAddr>,
    request_id: String,
    settings: Arc<Settings>,
    /// Where the router says which route matched, when the layer wraps the router.
    late: Option<Arc<RouteCell>>,
}

impl InFlight {
    /// The server span's request attributes (OpenTelemetry HTTP semantic conventions): set when
    /// the request starts if it is sampled, or when it ends if its unsampled root is kept.
    fn span_attributes(&mut self) {
        self.span.mark_profiled();
        let span = &mut self.span;
        span.set_attribute("http.request.method", self.method);
        if self.matched {
            span.set_attribute("http.route", self.endpoint.clone());
        }
        span.set_attribute("url.scheme", self.scheme);
        span.set_attribute("url.path", self.path.clone());
        if !self.ua.is_empty() {
            span.set_attribute("user_agent.original", self.ua.clone());
        }
        if let Some(ip) = self.client {
            span.set_attribute("client.address", ip_text(ip));
        }
        // A header's values, as the conventions record request headers. An id we generated or
        // validated: kept as it is, so that logs and traces join on it.
        span.set_id_attribute("http.request.header.x-request-id", request_id_attribute(&self.request_id));
        for (key, value) in &self.baggage_attributes {
            span.set_attribute(key, value.clone());
        }
    }

    /// Records the outcome: metrics, span status, access line.
    /// `error`: what failed and its type (`exception.type`).
    fn finish(mut self, status: u16, error: Option<(String, &'static str)>) {
        let elapsed = self.start.elapsed();
        if let Some(cell) = self.late.take() {
            match cell.route.get() {
                Some(route) => {
                    self.span.rename(site(self.method, Some(route)).name);
                    self.matched = true;
                    self.endpoint = route.to_string();
                    if self.span.is_recording() {
                        self.span.set_attribute("http.route", self.endpoint.clone());
                    }
                }
                // No route matched: the access line says so.
                None => self.bound.set("endpoint", crate::context::Value::Plain(UNMATCHED)),
            }
        }
        let mut code = itoa::Buffer::new();
        let code = code.format(status);
        let value = |slot: Slot| match slot {
            Slot::Method => self.method,
            Slot::Endpoint => self.endpoint.as_str(),
            Slot::Status => code,
            Slot::None => "",
        };
        match &error {
            Some((e, kind)) => self.span.set_error(e.clone(), kind),
            None if status >= 500 => self.span.set_error(format!("HTTP {status}"), "http_status"),
            None => {}
        }
        // After the outcome: an unsampled root kept for its error is an exemplar too.
        let exemplar = self.span.exemplar_ids();
        if let Some((family, slots)) = self.settings.requests {
            crate::metrics::series_by_slots(family, &slots, value).inc_with(exemplar);
        }
        if let Some((family, slots)) = self.settings.duration {
            crate::metrics::series_by_slots(family, &slots, value).observe_with(elapsed.as_secs_f64(), exemplar);
        }
        // The conventions' error class: the status code of a 5xx, `_OTHER` for a failure without
        // one (a dropped request's 499).
        if status >= 500 {
            self.span.set_attribute("error.type", code.to_owned());
        } else if error.is_some() {
            self.span.set_attribute("error.type", "_OTHER");
        }
        // An unsampled root kept for its error or its duration: as searchable as a sampled one.
        if self.span.kept_by_tail() {
            self.span_attributes();
        }
        self.span.set_attribute("http.response.status_code", i64::from(status));
        // The access line carries the request's context and its server span's ids.
        let (bound, tracestate) = (self.bound.clone(), self.tracestate.clone());
        self.span.run_in(Some(bound), tracestate, || {
            if !self.settings.access_log {
                return;
            }
            // To the microsecond: `12.875`, not `12.874631000000001` (and written with integers).
            let duration_ms = elapsed.as_micros() as f64 / 1000.0;
            match (&error, status) {
                // `method` and `endpoint` are on the line already, from the request's context.
                (Some((e, _)), _) => {
                    tracing::error!(target: "obs::access", status_code = status, duration_ms, error = %e, "request failed")
                }
                (None, 500..) => {
                    tracing::warn!(target: "obs::access", status_code = status, duration_ms, "request completed")
                }
                (None, _) => {
                    tracing::info!(target: "obs::access", status_code = status, duration_ms, "request completed")
                }
            }
        });
        self.span.finish();
    }
}

/// The response future of [`ObsService`].
pub struct ResponseFuture<F> {
    inner: F,
    state: Option<InFlight>,
    /// With observability disabled: the `X-Request-ID` the response gets, and nothing else.
    off: Option<HeaderValue>,
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: std::fmt::Display,
    RB: Default,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `inner` is structurally pinned and never moved; `state` is not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        if let Some(header) = &this.off {
            // Observability off: the request id, and a panic still answered with a 500.
            return match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
                Ok(Poll::Ready(Ok(mut response))) => {
                    response.headers_mut().insert(REQUEST_ID_NAME, header.clone());
                    Poll::Ready(Ok(response))
                }
                Ok(other) => other,
                Err(_) => Poll::Ready(Ok(panic_response(header.clone()))),
            };
        }
        let Some(state) = this.state.as_mut() else {
            panic!("ResponseFuture polled after completion");
        };
        let (bound, tracestate) = (state.bound.clone(), state.tracestate.clone());
        let polled = state
            .span
            .run_in(Some(bound), tracestate, || std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))));
        let state = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            _ => this.state.take().expect("checked above"),
        };
        let header = HeaderValue::from_str(&state.request_id).expect("request ids are visible ASCII");
        match polled {
            Ok(Poll::Pending) => unreachable!(),
            Ok(Poll::Ready(Ok(mut response))) => {
                state.finish(response.status().as_u16(), None);
                response.headers_mut().insert(REQUEST_ID_NAME, header);
                Poll::Ready(Ok(response))
            }
            Ok(Poll::Ready(Err(e))) => {
                state.finish(500, Some((e.to_string(), std::any::type_name::<E>())));
                Poll::Ready(Err(e))
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "the handler panicked".into());
                state.finish(500, Some((format!("panicked: {message}"), "panic")));
                Poll::Ready(Ok(panic_response(header)))
            }
        }
    }
}

/// The 500 a panicking handler is answered with.
fn panic_response<RB: Default>(request_id: HeaderValue) -> Response<RB> {
    let mut response = Response::new(RB::default());
    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(REQUEST_ID_NAME, request_id);
    response
}

impl<F> Drop for ResponseFuture<F> {
    fn drop(&mut self) {
        // Dropped before completion: the client went away or an outer timeout fired.
        if let Some(state) = self.state.take() {
            state.finish(499, Some(("cancelled before the response".into(), "cancelled")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_configured_after_a_clone_changes_alone() {
        let base = ObsLayer::new();
        let copy = base.clone();
        let quiet = base.access_log(false);
        assert!(!quiet.settings.access_log);
        assert!(copy.settings.access_log, "the clone keeps its settings");
    }

    #[test]
    fn request_ids_are_validated_and_generated() {
        let ok = HeaderValue::from_static("req-1.a_b:c");
        assert_eq!(valid_request_id(&ok), Some("req-1.a_b:c"));
        for bad in ["", "a b", "x\u{7f}", "<script>", "a,b"] {
            if let Ok(v) = HeaderValue::from_str(bad) {
                assert_eq!(valid_request_id(&v), None, "{bad:?}");
            }
        }
        assert_eq!(valid_request_id(&HeaderValue::from_str(&"a".repeat(129)).unwrap()), None);
        assert_eq!(valid_request_id(&HeaderValue::from_bytes(b"\xff\xfe").unwrap()), None);
        // A card number is no request id: it would be logged as a kept id.
        assert_eq!(valid_request_id(&HeaderValue::from_static("4111111111111111")), None);
        assert_eq!(
            crate::scrub::percent_decode("/users/ana%40example.org/%E2%9C%93%zz"),
            "/users/ana@example.org/✓%zz"
        );
        let id = new_request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4", "version 4: {id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "variant: {id}");
        assert_ne!(new_request_id(), id);
        for ip in ["127.0.0.1", "0.0.0.0", "255.255.255.255", "10.20.3.40", "2001:db8::5", "::ffff:10.0.0.1"] {
            assert_eq!(ip_text(ip.parse().unwrap()), ip);
        }
    }

    /// Generated ids are never scrubbed: about one in a thousand holds a run of digits the
    /// free-text scrubber takes for a card number (`5d73c33f-[CARD]e6aedc`), which broke the join
    /// between logs and traces by request id.
    #[test]
    fn a_million_generated_request_ids_reach_logs_and_spans_unchanged() {
        use crate::context::{Bound, Value};
        let mut would_have_been_scrubbed = 0;
        for _ in 0..1_000_000 {
            let id = new_request_id();
            if matches!(crate::scrub::scrub_text(&id), std::borrow::Cow::Owned(_)) {
                would_have_been_scrubbed += 1;
            }
            // The log context, as the layer binds it.
            let bound = Bound::labeled(&[("request_id", Some(Value::Text(&id)))], 0);
            let rendered = bound.rendered(crate::logs::LogFormat::Json, &[]);
            assert_eq!(&*rendered, format!(",\"request_id\":\"{id}\""), "{id}");
            // The span attribute, as the layer sets it.
            let mut span = SpanState::test_recording();
            span.set_id_attribute("http.request.header.x-request-id", request_id_attribute(&id));
            let attributes = span.test_attributes();
            assert_eq!(format!("{:?}", attributes[0].value), format!("{:?}", request_id_attribute(&id)), "{id}");
        }
        // The hazard is real (else this test would prove nothing).
        assert!(would_have_been_scrubbed > 100, "{would_have_been_scrubbed}");
    }

    #[test]
    fn the_url_scheme_from_the_request_else_a_trusted_proxy_else_http() {
        let trusted: Vec<TrustedProxy> = vec!["10.0.0.0/8".parse().unwrap()];
        let (proxy, stranger) = (Some("10.0.0.1".parse().unwrap()), Some("198.51.100.7".parse().unwrap()));
        let (xff, fwd) = (ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded);
        let path: http::Uri = "/events/1".parse().unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("http, HTTPS"));
        h.insert("forwarded", HeaderValue::from_static("for=203.0.113.9;proto=http, for=10.1.2.3;proto=https"));
        assert_eq!(url_scheme(&path, proxy, &h, &trusted, xff), "https", "the nearest hop's value");
        assert_eq!(url_scheme(&path, proxy, &h, &trusted, fwd), "https");
        assert_eq!(url_scheme(&path, stranger, &h, &trusted, xff), "http", "not from anyone");
        assert_eq!(url_scheme(&path, None, &h, &trusted, xff), "http");
        let absolute: http::Uri = "https://revel.example/events/1".parse().unwrap();
        assert_eq!(url_scheme(&absolute, stranger, &http::HeaderMap::new(), &trusted, xff), "https");
        let mut odd = http::HeaderMap::new();
        odd.insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
        assert_eq!(url_scheme(&path, proxy, &odd, &trusted, xff), "http", "an unknown scheme is not passed on");
    }

    #[test]
    fn forwarded_addresses_only_from_trusted_proxies() {
        let trusted: Vec<TrustedProxy> = ["10.0.0.0/8", "fd00::/8"].iter().map(|s| s.parse().unwrap()).collect();
        let xff = ForwardedHeader::XForwardedFor;
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9, 10.1.2.3"));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_address(Some(ip("10.0.0.1")), &h, &trusted, xff), Some(ip("203.0.113.9")));
        assert_eq!(client_address(Some(ip("198.51.100.7")), &h, &trusted, xff), Some(ip("198.51.100.7")));
        let mut f = http::HeaderMap::new();
        f.insert("forwarded", HeaderValue::from_static("for=\"[2001:db8::5]:443\";proto=https, for=10.0.0.2"));
        let fwd = ForwardedHeader::Forwarded;
        assert_eq!(client_address(Some(ip("fd00::1")), &f, &trusted, fwd), Some(ip("2001:db8::5")));
        // Only the configured header is read: a client's own `Forwarded` is ignored behind a
        // proxy that sets `X-Forwarded-For`.
        f.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.20"));
        assert_eq!(client_address(Some(ip("10.0.0.1")), &f, &trusted, xff), Some(ip("198.51.100.20")));
        // A hop that does not parse ends the walk: the spoofed address before it is not taken.
        let mut junk = http::HeaderMap::new();
        junk.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4, unknown, 10.0.0.9"));
        assert_eq!(client_address(Some(ip("10.0.0.1")), &junk, &trusted, xff), Some(ip("10.0.0.9")));
        assert!("::ffff:10.0.0.0/104".parse::<TrustedProxy>().unwrap().contains(ip("10.1.2.3")));
        assert!(!"::ffff:10.0.0.0/104".parse::<TrustedProxy>().unwrap().contains(ip("11.1.2.3")));
        assert!("10.0.0.0/33".parse::<TrustedProxy>().is_err());
        assert!("proxy.local".parse::<TrustedProxy>().unwrap_err().to_string().contains("expected an IP address"));
        assert!("0.0.0.0/0".parse::<TrustedProxy>().unwrap().contains(ip("8.8.8.8")));
        assert!(!"10.0.0.0/8".parse::<TrustedProxy>().unwrap().contains(ip("11.0.0.1")));
    }
}
