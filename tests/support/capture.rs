//! Log lines captured through `Config::log_writer`, for assertions.
#![allow(dead_code)] // each test binary uses part of it

use std::sync::{Arc, Mutex};

/// Everything the log layer wrote, in order.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// The writer to give `Config::log_writer`.
    pub fn writer(&self) -> impl Fn(&[u8]) + Send + Sync + 'static {
        let buf = self.0.clone();
        move |line| buf.lock().unwrap().extend_from_slice(line)
    }

    /// The lines so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// Forgets the lines so far.
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// The setup the tests of logs, context and scrubbing share: development (named, so `init` adds no
/// line about it), every span sampled and sent to `traces_endpoint`, every log line kept in the
/// returned [`Captured`]. The caller adds to the config what its test needs, then calls
/// `obs_runtime::init`.
pub fn config(traces_endpoint: String) -> (Captured, obs_runtime::config::Config) {
    let captured = Captured::default();
    let config = obs_runtime::config::Config::from_vars(|name| (name == "OBS_ENV").then(|| "development".to_owned()))
        .unwrap()
        .traces_endpoint(traces_endpoint)
        .sampler(obs_runtime::config::Sampler::AlwaysOn)
        .log_writer(captured.writer());
    (captured, config)
}
