//! The on-demand profiling endpoints, as an axum router the application mounts.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use crate::config::EndpointSettings;

use super::sampler::{Format, ProfileError, ProfileRequest, take_async};

#[derive(serde::Deserialize)]
struct Params {
    seconds: Option<String>,
    frequency: Option<String>,
}

/// The profiling routes, to merge into the application's router:
///
/// - `GET /debug/pprof/profile?seconds=30&frequency=100`: a pprof protobuf
///   (`go tool pprof http://host/debug/pprof/profile?seconds=30` without a token; with one,
///   `curl -H 'Authorization: Bearer …' -o cpu.pb …` then `go tool pprof cpu.pb`);
/// - `GET /debug/pprof/flamegraph?seconds=30&frequency=100`: an SVG flamegraph.
///
/// `seconds` defaults to 30 (or the maximum, if lower) and `frequency` to the configured one.
/// One profile runs at a time: a second request gets `409 Conflict`. A bad parameter gets `400`
/// naming it, a missing or wrong token `401`, disabled endpoints `404`.
///
/// ```no_run
/// # async fn run(config: obs_runtime::config::Config) {
/// let profiling = config.profiling_endpoints();
/// let app: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hello" }))
///     .merge(obs_runtime::profile::router(profiling));
/// # }
/// ```
pub fn router<S: Clone + Send + Sync + 'static>(settings: EndpointSettings) -> axum::Router<S> {
    let settings = Arc::new(settings);
    axum::Router::new()
        .route("/debug/pprof/profile", get(pprof))
        .route("/debug/pprof/flamegraph", get(flamegraph))
        .with_state(settings)
}

async fn pprof(State(s): State<Arc<EndpointSettings>>, headers: HeaderMap, Query(p): Query<Params>) -> Response {
    serve(&s, &headers, p, Format::Pprof).await
}

async fn flamegraph(State(s): State<Arc<EndpointSettings>>, headers: HeaderMap, Query(p): Query<Params>) -> Response {
    serve(&s, &headers, p, Format::Flamegraph).await
}

fn error(status: StatusCode, message: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message + "\n").into_response()
}

async fn serve(s: &EndpointSettings, headers: &HeaderMap, p: Params, format: Format) -> Response {
    if !s.enabled {
        return error(
            StatusCode::NOT_FOUND,
            "profiling endpoints are off (OBS_PROFILING_ENDPOINTS=true turns them on)".into(),
        );
    }
    if let Some(token) = &s.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")))
            .map_or("", |(_, t)| t.trim());
        // An empty token never matches (a request without the header gives an empty one).
        if token.is_empty() || !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            let mut r = error(StatusCode::UNAUTHORIZED, "a profile needs `Authorization: Bearer <token>`".into());
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    let max = s.max_duration.as_secs();
    let seconds = match p.seconds.as_deref().map(str::trim) {
        None => 30.min(max),
        Some(v) => match v.parse::<u64>() {
            Ok(n @ 1..) if n <= max => n,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("`seconds` is a whole number from 1 to {max}; got `{v}`"),
                );
            }
        },
    };
    let frequency = match p.frequency.as_deref().map(str::trim) {
        None => s.frequency,
        Some(v) => match v.parse::<u32>() {
            Ok(hz @ 1..=super::sampler::MAX_FREQUENCY) => hz,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "`frequency` is a whole number of Hz from 1 to {}; got `{v}`",
                        super::sampler::MAX_FREQUENCY
                    ),
                );
            }
        },
    };
    let req = ProfileRequest::new(Duration::from_secs(seconds)).frequency(frequency);
    match take_async(req).await {
        Ok(profile) => {
            let (ctype, name) = match format {
                Format::Pprof => ("application/octet-stream", "attachment; filename=\"cpu.pb\""),
                Format::Flamegraph => ("image/svg+xml", "inline; filename=\"cpu.svg\""),
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, ctype), (header::CONTENT_DISPOSITION, name)],
                profile.render(format),
            )
                .into_response()
        }
        Err(e @ ProfileError::Busy) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e @ (ProfileError::Duration { .. } | ProfileError::Frequency(_))) => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e @ ProfileError::Stopped) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e @ ProfileError::Sampler(_)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &byte) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ byte);
    }
    diff == 0
}
