//! Continuous profiles pushed to Grafana Pyroscope 1.x: `POST <url>/push.v1.PusherService/Push`
//! (Connect, unary, `application/proto`), one series per endpoint or task, labelled with
//! `service_name`, `environment` and `version`.
//!
//! A thread of its own pushes, behind a queue of two profiles: a Pyroscope that is down or slow
//! costs the profiles (counted in `obs_profiles_dropped_total`), never the service's time.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::sampler::{Continuous, Profile};
use crate::metrics::Series;

/// `PushRequest` of `push/v1/push.proto`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub(crate) series: Vec<RawProfileSeries>,
}

/// `RawProfileSeries`: a label set and its profiles.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RawProfileSeries {
    #[prost(message, repeated, tag = "1")]
    pub(crate) labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "2")]
    pub(crate) samples: Vec<RawSample>,
}

/// `types.v1.LabelPair`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LabelPair {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(string, tag = "2")]
    pub(crate) value: String,
}

/// `RawSample`: one pprof profile.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RawSample {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) raw_profile: Vec<u8>,
    #[prost(string, tag = "2")]
    pub(crate) id: String,
}

/// The request for one window: a series per label (endpoint, task, or none).
pub(crate) fn request(profile: &Profile, base: &[(String, String)]) -> PushRequest {
    let series = profile
        .by_label()
        .into_iter()
        .map(|(label, part)| {
            let mut labels: Vec<LabelPair> =
                base.iter().map(|(k, v)| LabelPair { name: k.clone(), value: v.clone() }).collect();
            if let Some((k, v)) = label {
                labels.push(LabelPair { name: k.to_owned(), value: v });
            }
            RawProfileSeries { labels, samples: vec![RawSample { raw_profile: part.pprof(false), id: String::new() }] }
        })
        .collect();
    PushRequest { series }
}

/// The continuous-profiling half of the sampler: a pusher thread fed by the sampler's windows.
pub(crate) fn continuous(config: &crate::config::Config, url: &str) -> Continuous {
    let p = &config.profiling;
    let mut base = vec![
        ("__name__".to_owned(), "process_cpu".to_owned()),
        ("service_name".to_owned(), config.service_name.clone()),
        ("environment".to_owned(), config.environment.as_str().to_owned()),
    ];
    if let Some(v) = &config.service_version {
        base.push(("version".to_owned(), v.clone()));
    }
    let endpoint = format!("{url}/push.v1.PusherService/Push");
    let timeout = config.export_timeout;
    let dropped = crate::metrics::registry().family(&crate::metrics::own::PROFILES_DROPPED);
    let queue_full = dropped.series_for(&["queue_full"]);
    let push_failed = dropped.series_for(&["push_failed"]);
    let (tx, rx) = mpsc::sync_channel::<Profile>(2);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let access = Access { tenant: p.pyroscope_tenant.clone(), auth: p.pyroscope_auth.clone() };
    let spawned = std::thread::Builder::new().name("obs-pyroscope".into()).spawn(move || {
        pusher(rx, &endpoint, &base, &access, timeout, push_failed);
        let _ = done_tx.send(());
    });
    if spawned.is_err() {
        tracing::warn!(target: "obs", "continuous profiling is off: cannot start its thread");
    }
    let sink_tx = tx.clone();
    Continuous {
        frequency: p.frequency,
        interval: p.upload_interval,
        sink: Box::new(move |profile| {
            if sink_tx.try_send(profile).is_err() {
                queue_full.inc();
            }
        }),
        flush: Box::new(move |deadline: Instant| {
            drop(tx);
            done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok()
        }),
    }
}

/// What a multi-tenant or authenticated Pyroscope needs on every push.
struct Access {
    tenant: Option<String>,
    auth: Option<(String, crate::config::Secret)>,
}

fn pusher(
    rx: mpsc::Receiver<Profile>,
    endpoint: &str,
    base: &[(String, String)],
    access: &Access,
    timeout: Duration,
    failed: &'static Series,
) {
    let client = match reqwest::blocking::Client::builder().timeout(timeout).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(target: "obs", error = %e, "continuous profiling is off: no HTTP client");
            return;
        }
    };
    let mut failing = false;
    // Ends when the sender is dropped (shutdown), after the profiles already queued.
    for profile in rx {
        if profile.samples() == 0 {
            continue;
        }
        let body = prost::Message::encode_to_vec(&request(&profile, base));
        let mut push =
            client.post(endpoint).header("content-type", "application/proto").header("connect-protocol-version", "1");
        if let Some(tenant) = &access.tenant {
            push = push.header("x-scope-orgid", tenant);
        }
        if let Some((user, password)) = &access.auth {
            push = push.basic_auth(user, Some(&password.0));
        }
        let result = push.body(body).send();
        match result {
            Ok(r) if r.status().is_success() => failing = false,
            other => {
                failed.inc();
                if !failing {
                    let why = match other {
                        Ok(r) => format!("HTTP {}", r.status()),
                        Err(e) => e.to_string(),
                    };
                    tracing::warn!(target: "obs", error = %why, "Pyroscope refused or missed a profile; dropping profiles until it answers");
                    failing = true;
                }
            }
        }
    }
}
