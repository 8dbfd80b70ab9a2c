//! The built-in viewer's settings (its module, `viewer`, re-exports them; here, below the
//! modules, so that `Config` can make them).

use std::sync::Arc;

/// Who may see the viewer, and where its links go; from
/// [`Config::viewer`](crate::config::Config::viewer).
#[derive(Clone)]
pub struct Settings {
    pub(crate) enabled: bool,
    pub(crate) token: Option<Arc<str>>,
    pub(crate) grafana: Option<Arc<str>>,
    pub(crate) service: Arc<str>,
    pub(crate) frequency: u32,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("enabled", &self.enabled)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("grafana", &self.grafana)
            .finish_non_exhaustive()
    }
}

impl Default for Settings {
    /// On, without a token or Grafana links.
    fn default() -> Self {
        Settings { enabled: true, token: None, grafana: None, service: Arc::from("unknown_service"), frequency: 100 }
    }
}

impl Settings {
    pub(crate) fn from_config(c: &super::Config) -> Settings {
        Settings {
            enabled: c.viewer.on && c.enabled,
            token: c.viewer.token.as_ref().map(|t| Arc::from(t.0.as_str())),
            grafana: c.viewer.grafana.as_deref().map(Arc::from),
            service: Arc::from(c.service_name.as_str()),
            frequency: c.profiling.frequency,
        }
    }
}
