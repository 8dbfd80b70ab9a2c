//! Configuration from the environment (`OBS_ENV`, `ENABLE_OBSERVABILITY`, the standard `OTEL_*`
//! variables), overridable in code.
//!
//! ```
//! use obs_runtime::config::{Config, Environment};
//!
//! let config = Config::from_vars(|name| match name {
//!     "OBS_ENV" => Some("production".into()),
//!     "OTEL_SERVICE_NAME" => Some("revel".into()),
//!     _ => None,
//! })
//! .unwrap()
//! .service_version("1.4.2");
//! assert_eq!(config.environment(), Environment::Production);
//! assert_eq!(config.sampling_ratio(), 0.1);
//!
//! let err = Config::from_vars(|name| (name == "OTEL_TRACES_SAMPLER_ARG").then(|| "ten".into())).unwrap_err();
//! assert_eq!(err.to_string(), "OTEL_TRACES_SAMPLER_ARG=\"ten\" is invalid: expected a number from 0 to 1, e.g. 0.1");
//! ```

use std::fmt;
use std::time::Duration;

#[cfg(feature = "config-file")]
mod file;
mod sampling;
#[cfg(feature = "viewer")]
pub(crate) mod viewer;
pub use sampling::{Decision, InvalidRule, SamplingRule};

/// Deployment environment (`OBS_ENV`), which sets the defaults of the profiles in the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Everything sampled, DEBUG logs; spans go to a local file when no endpoint is set.
    Development,
    /// 10 % of traces sampled (configurable), INFO logs.
    Staging,
    /// 10 % of traces sampled (configurable), INFO logs.
    Production,
    /// Observability off unless `ENABLE_OBSERVABILITY=true`.
    Test,
}

impl Environment {
    /// The value of `deployment.environment`.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Staging => "staging",
            Environment::Production => "production",
            Environment::Test => "test",
        }
    }
}

/// A variable with a value that is not of the accepted form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable.
    pub variable: &'static str,
    /// Its value.
    pub value: String,
    /// What is accepted.
    pub expected: &'static str,
    /// Where the value came from when `OTEL_CONFIG_FILE` names a configuration file: the file
    /// and the key, e.g. `/etc/obs.yaml: tracer_provider.sampler.trace_id_ratio_based.ratio`
    /// (`variable` is then the variable the key stands for, or `OTEL_CONFIG_FILE` itself).
    pub key: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) if self.variable == "OTEL_CONFIG_FILE" => {
                write!(f, "{key}: {:?} is invalid: expected {}", self.value, self.expected)
            }
            Some(key) => {
                write!(f, "{key} ({}): {:?} is invalid: expected {}", self.variable, self.value, self.expected)
            }
            None => write!(f, "{}={:?} is invalid: expected {}", self.variable, self.value, self.expected),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The OTLP transport (`OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// `http/protobuf`, the default: OTLP over HTTP (port 4318, path `/v1/traces`).
    HttpProtobuf,
    /// `grpc`: OTLP over gRPC (port 4317), with the `grpc` feature.
    #[cfg(feature = "grpc")]
    Grpc,
}

/// Head sampling of root spans; children follow their parent's decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// Every trace.
    AlwaysOn,
    /// No trace.
    AlwaysOff,
    /// This fraction of traces, decided from the trace id (so every service agrees).
    Ratio(f64),
}

/// Everything `init` needs; see the module documentation.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) enabled: bool,
    pub(crate) environment: Environment,
    /// `OBS_ENV` was set (else `init` says that development defaults apply).
    pub(crate) environment_named: bool,
    pub(crate) service_name: String,
    /// The environment named the service (`OTEL_SERVICE_NAME`, or `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES`): [`Config::default_service_name`] leaves it.
    pub(crate) service_named: bool,
    pub(crate) service_version: Option<String>,
    pub(crate) traces_endpoint: Option<String>,
    /// Headers sent with every export (`OTEL_EXPORTER_OTLP_TRACES_HEADERS`,
    /// `OTEL_EXPORTER_OTLP_HEADERS`): a tenant id, credentials.
    pub(crate) otlp_headers: Vec<(String, Secret)>,
    pub(crate) protocol: Protocol,
    /// Where spans go without an endpoint (development): JSON lines.
    pub(crate) spans_file: Option<std::path::PathBuf>,
    pub(crate) sampler: Sampler,
    /// Rules deciding before the sampler's ratio (`OBS_TRACES_SAMPLING_RULES`).
    pub(crate) sampling_rules: Vec<SamplingRule>,
    /// A remote parent's sampled flag decides (OpenTelemetry's `parentbased_*` samplers).
    pub(crate) parent_based: bool,
    pub(crate) keep_error_traces: bool,
    pub(crate) keep_slow_traces: Option<Duration>,
    pub(crate) db_slow_query: Option<Duration>,
    pub(crate) resource_attributes: Vec<(String, String)>,
    pub(crate) queue_capacity: usize,
    /// Spans in one export request (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub(crate) batch_size: usize,
    /// How often the exporter looks at the queue while spans come in (`OTEL_BSP_SCHEDULE_DELAY`).
    pub(crate) schedule_delay: Duration,
    /// One export attempt (`OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT`).
    pub(crate) export_timeout: Duration,
    /// One batch's attempts and backoff together (`OTEL_BSP_EXPORT_TIMEOUT`).
    pub(crate) export_budget: Duration,
    /// `traceparent`/`tracestate` read and written (`OTEL_PROPAGATORS`).
    pub(crate) propagate: bool,
    /// W3C `baggage` passed on from a request to its outgoing calls (`OTEL_PROPAGATORS`).
    pub(crate) baggage: bool,
    /// The baggage keys copied onto the request's span and log lines (`OBS_BAGGAGE_ATTRIBUTES`).
    pub(crate) baggage_attributes: Vec<String>,
    pub(crate) limits: Limits,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) logs: bool,
    /// Log lines go to the console (standard output, or the `log_writer`): `OTEL_LOGS_EXPORTER`
    /// lists `console` (the default).
    pub(crate) console_logs: bool,
    /// Log records over OTLP/HTTP: `OTEL_LOGS_EXPORTER` lists `otlp`.
    pub(crate) otlp_logs: Option<OtlpLogs>,
    pub(crate) log_format: LogFormat,
    pub(crate) log_filter: tracing_subscriber::filter::Targets,
    /// The process metrics (`process_*`), on by default where the platform has them.
    pub(crate) process_metrics: bool,
    /// The commit in `obs_build_info`, when known.
    pub(crate) build_commit: Option<String>,
    /// `tracing` spans turned into obs spans (`OBS_TRACING_SPANS`); `None`: no bridge.
    pub(crate) tracing_spans: Option<tracing_subscriber::filter::Targets>,
    pub(crate) scrub: crate::scrub::Rules,
    pub(crate) log_writer: Option<LogWriter>,
    pub(crate) profiling: Profiling,
    #[cfg_attr(not(feature = "viewer"), allow(dead_code))]
    pub(crate) viewer: Viewer,
}

/// The built-in viewer's settings (`OBS_VIEWER`, `OBS_VIEWER_TOKEN`, `OBS_GRAFANA_URL`); used
/// with the `viewer` feature.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "viewer"), allow(dead_code))]
pub(crate) struct Viewer {
    /// Whether it records and answers (development only by default).
    pub(crate) on: bool,
    /// The token it requires (required outside development).
    pub(crate) token: Option<Secret>,
    /// Grafana's base URL, for links to a trace in Tempo and to a service's logs in Loki.
    pub(crate) grafana: Option<String>,
}

/// Where and how log records are exported over OTLP/HTTP (`OTEL_LOGS_EXPORTER=otlp`).
#[derive(Debug, Clone)]
pub(crate) struct OtlpLogs {
    /// The logs URL, used as is (`…/v1/logs`; over gRPC, the collector's address).
    pub(crate) endpoint: String,
    /// OTLP/gRPC instead of OTLP/HTTP (`OTEL_EXPORTER_OTLP_LOGS_PROTOCOL=grpc`, feature `grpc`).
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))]
    pub(crate) grpc: bool,
    pub(crate) headers: Vec<(String, Secret)>,
    pub(crate) timeout: Duration,
    /// Records waiting at most (`OTEL_BLRP_MAX_QUEUE_SIZE`); more are dropped and counted.
    pub(crate) queue: usize,
    /// Records per request at most (`OTEL_BLRP_MAX_EXPORT_BATCH_SIZE`).
    pub(crate) batch: usize,
    /// The longest a record waits for a batch to fill (`OTEL_BLRP_SCHEDULE_DELAY`).
    pub(crate) delay: Duration,
    /// How long one batch may spend in attempts and backoff (`OTEL_BLRP_EXPORT_TIMEOUT`).
    pub(crate) budget: Duration,
}

/// Profiling settings (`OBS_PROFILING*`, `PYROSCOPE_SERVER_ADDRESS`); used with the
/// `profiling` and `pyroscope` features.
#[derive(Debug, Clone)]
// Each field is read only with some of the `profiling`, `axum` and `pyroscope` features.
#[allow(dead_code)]
pub(crate) struct Profiling {
    /// Whether the on-demand endpoints answer (`OBS_PROFILING_ENDPOINTS`; development only by default).
    pub(crate) endpoints: bool,
    /// The bearer token they require (`OBS_PROFILING_TOKEN`).
    pub(crate) token: Option<Secret>,
    /// The longest profile they take (`OBS_PROFILING_MAX_SECONDS`, default 60).
    pub(crate) max_duration: Duration,
    /// Sampling frequency (`OBS_PROFILING_HZ`, default 100).
    pub(crate) frequency: u32,
    /// Continuous profiling (`OBS_PROFILING`, default on) needs a Pyroscope server.
    pub(crate) continuous: bool,
    /// Where continuous profiles go (`PYROSCOPE_SERVER_ADDRESS`; none by default: no sampling).
    pub(crate) pyroscope: Option<String>,
    /// The tenant of a multi-tenant Pyroscope (`PYROSCOPE_TENANT_ID`), sent as `X-Scope-OrgID`.
    pub(crate) pyroscope_tenant: Option<String>,
    /// Basic authentication for Pyroscope (`PYROSCOPE_BASIC_AUTH_USER` and `_PASSWORD`).
    pub(crate) pyroscope_auth: Option<(String, Secret)>,
    /// How long each pushed profile covers.
    pub(crate) upload_interval: Duration,
}

/// A credential read from the environment: its `Debug` does not show it, so that printing a
/// [`Config`] leaks nothing.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Where `init`'s log layer writes, when not standard output.
#[derive(Clone)]
pub(crate) struct LogWriter(pub(crate) LineFn);

impl fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogWriter")
    }
}

fn default_log_filter(environment: Environment) -> tracing_subscriber::filter::Targets {
    use tracing::level_filters::LevelFilter;
    let level = if environment == Environment::Development { LevelFilter::DEBUG } else { LevelFilter::INFO };
    tracing_subscriber::filter::Targets::new().with_default(level).with_targets([
        ("hyper", LevelFilter::INFO),
        ("hyper_util", LevelFilter::INFO),
        ("h2", LevelFilter::INFO),
        ("tonic", LevelFilter::INFO),
        ("reqwest", LevelFilter::INFO),
        ("tower", LevelFilter::INFO),
        ("opentelemetry", LevelFilter::WARN),
        ("opentelemetry_sdk", LevelFilter::WARN),
        ("opentelemetry-otlp", LevelFilter::WARN),
        // sqlx's statement lines carry the whole SQL text, literals included: obs's database
        // spans and its slow-query line (literals replaced) say the same without them.
        ("sqlx::query", LevelFilter::OFF),
    ])
}

const TRUE_FALSE: &str = "`true` or `false`";

fn parse_bool(variable: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError { variable, value: value.into(), expected: TRUE_FALSE, key: None }),
    }
}

/// A baggage key obs copies: what a log line's key and a span attribute's name take as they are.
fn valid_baggage_attribute(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The downward API's variables obs reads, and the resource attribute each sets.
const KUBERNETES_VARIABLES: &[(&str, &str)] = &[
    ("K8S_POD_NAME", "k8s.pod.name"),
    ("K8S_POD_UID", "k8s.pod.uid"),
    ("K8S_NAMESPACE_NAME", "k8s.namespace.name"),
    ("K8S_NODE_NAME", "k8s.node.name"),
];

/// `unknown_service:<executable>`: OpenTelemetry's service name when none is given.
fn unknown_service() -> String {
    let exe = std::env::current_exe().ok().and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()));
    format!("unknown_service:{}", exe.unwrap_or_default())
}

/// The variables `Config::from_vars` reads, one small parser each: a value that does not parse is
/// an error naming the variable and the form expected; a blank one counts as unset.
struct Vars<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        self.get(name).map_or(Ok(default), |v| parse_bool(name, &v))
    }

    fn millis(&self, name: &'static str) -> Result<Option<Duration>, ConfigError> {
        let Some(v) = self.get(name) else { return Ok(None) };
        match v.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms))),
            _ => Err(ConfigError {
                variable: name,
                value: v,
                expected: "a number of milliseconds above 0, e.g. 10000",
                key: None,
            }),
        }
    }

    /// Milliseconds, `0` for none; `default` when unset.
    fn millis_or_off(
        &self,
        name: &'static str,
        default: Duration,
        expected: &'static str,
    ) -> Result<Option<Duration>, ConfigError> {
        let Some(v) = self.get(name) else { return Ok(Some(default)) };
        match v.trim().parse::<u64>() {
            Ok(0) => Ok(None),
            Ok(ms) => Ok(Some(Duration::from_millis(ms))),
            Err(_) => Err(ConfigError { variable: name, value: v, expected, key: None }),
        }
    }

    fn count(&self, name: &'static str) -> Result<Option<usize>, ConfigError> {
        let Some(v) = self.get(name) else { return Ok(None) };
        match v.trim().parse::<usize>() {
            Ok(n) => Ok(Some(n)),
            _ => Err(ConfigError { variable: name, value: v, expected: "a whole number, e.g. 128", key: None }),
        }
    }

    /// A whole number in `range`, `default` when unset.
    fn ranged<T: std::str::FromStr + PartialOrd>(
        &self,
        name: &'static str,
        range: std::ops::RangeInclusive<T>,
        default: T,
        expected: &'static str,
    ) -> Result<T, ConfigError> {
        let Some(v) = self.get(name) else { return Ok(default) };
        match v.trim().parse::<T>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(ConfigError { variable: name, value: v, expected, key: None }),
        }
    }

    /// `OBS_ENV`, and whether it was given (development is the default).
    fn environment(&self) -> Result<(Environment, bool), ConfigError> {
        let Some(v) = self.get("OBS_ENV") else { return Ok((Environment::Development, false)) };
        let environment = match v.trim().to_ascii_lowercase().as_str() {
            "development" => Environment::Development,
            "staging" => Environment::Staging,
            "production" => Environment::Production,
            "test" => Environment::Test,
            // No abbreviations: the name is what dashboards filter `deployment.environment`
            // on, so a value that is not one of the four is refused rather than guessed.
            other => {
                let expected = match other {
                    "prod" => "`production` (written in full), or `development`, `staging`, `test`",
                    "dev" => "`development` (written in full), or `staging`, `production`, `test`",
                    _ => "`development`, `staging`, `production` or `test`",
                };
                return Err(ConfigError { variable: "OBS_ENV", value: v, expected, key: None });
            }
        };
        Ok((environment, true))
    }

    /// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`.
    fn protocol(&self) -> Result<Protocol, ConfigError> {
        self.protocol_of("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
    }

    /// A signal's protocol: its own variable, else `OTEL_EXPORTER_OTLP_PROTOCOL`.
    fn protocol_of(&self, signal: &'static str) -> Result<Protocol, ConfigError> {
        let (variable, value) = match self.get(signal) {
            Some(p) => (signal, Some(p)),
            None => ("OTEL_EXPORTER_OTLP_PROTOCOL", self.get("OTEL_EXPORTER_OTLP_PROTOCOL")),
        };
        match value.as_deref().map(str::trim) {
            None | Some("http/protobuf") => Ok(Protocol::HttpProtobuf),
            #[cfg(feature = "grpc")]
            Some("grpc") => Ok(Protocol::Grpc),
            Some(_) => Err(ConfigError {
                variable,
                value: value.unwrap_or_default(),
                expected: if cfg!(feature = "grpc") {
                    "`http/protobuf` or `grpc`"
                } else {
                    "`http/protobuf` (`grpc` needs the `grpc` feature of obs-runtime)"
                },
                key: None,
            }),
        }
    }

    fn traces_endpoint(&self, protocol: Protocol, environment: Environment) -> Result<Option<String>, ConfigError> {
        Ok(match (self.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), self.get("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(url), _) => Some(check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)?),
            // Over HTTP the generic endpoint gets the signal's path, as the specification says;
            // gRPC has no path.
            (None, Some(url)) => {
                let url = check_url("OTEL_EXPORTER_OTLP_ENDPOINT", url)?;
                Some(match protocol {
                    Protocol::HttpProtobuf => format!("{}/v1/traces", url.trim_end_matches('/')),
                    #[cfg(feature = "grpc")]
                    Protocol::Grpc => url,
                })
            }
            // OpenTelemetry's default endpoint, where a collector usually listens.
            (None, None) if environment != Environment::Development => Some(match protocol {
                Protocol::HttpProtobuf => "http://localhost:4318/v1/traces".into(),
                #[cfg(feature = "grpc")]
                Protocol::Grpc => "http://localhost:4317".into(),
            }),
            (None, None) => None,
        })
    }

    fn otlp_headers(&self) -> Result<Vec<(String, Secret)>, ConfigError> {
        match (self.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS"), self.get("OTEL_EXPORTER_OTLP_HEADERS")) {
            (Some(h), _) => otlp_headers("OTEL_EXPORTER_OTLP_TRACES_HEADERS", &h),
            (None, Some(h)) => otlp_headers("OTEL_EXPORTER_OTLP_HEADERS", &h),
            (None, None) => Ok(Vec::new()),
        }
    }

    /// Whether spans leave the process: not with `OTEL_TRACES_EXPORTER=none` or
    /// `OTEL_SDK_DISABLED=true`.
    fn exporting(&self) -> Result<bool, ConfigError> {
        let sdk_disabled = self.bool("OTEL_SDK_DISABLED", false)?;
        let export = match self.get("OTEL_TRACES_EXPORTER").map(|v| v.trim().to_ascii_lowercase()) {
            None => true,
            Some(v) if v == "otlp" => true,
            Some(v) if v == "none" => false,
            Some(v) => {
                return Err(ConfigError {
                    variable: "OTEL_TRACES_EXPORTER",
                    value: v,
                    expected: "`otlp` or `none` (without an endpoint in development, spans go to the file \
                               OBS_SPANS_FILE names)",
                    key: None,
                });
            }
        };
        Ok(export && !sdk_disabled)
    }

    /// The span queue's capacity and the export batch size.
    fn queue(&self) -> Result<(usize, usize), ConfigError> {
        let queue_capacity = match self.count("OTEL_BSP_MAX_QUEUE_SIZE")? {
            Some(0) => {
                return Err(ConfigError {
                    variable: "OTEL_BSP_MAX_QUEUE_SIZE",
                    value: "0".into(),
                    expected: "a number of spans above 0, e.g. 2048",
                    key: None,
                });
            }
            Some(n) => n,
            None => 4096,
        };
        let batch_size = match self.count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")? {
            Some(n) if n == 0 || n > queue_capacity => {
                return Err(ConfigError {
                    variable: "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                    value: n.to_string(),
                    expected: "a number of spans above 0 and at most the queue size (OTEL_BSP_MAX_QUEUE_SIZE, 4096 by \
                               default), e.g. 512",
                    key: None,
                });
            }
            Some(n) => n,
            None => 512.min(queue_capacity),
        };
        Ok((queue_capacity, batch_size))
    }

    /// Whether W3C Trace Context and W3C Baggage are propagated; OpenTelemetry's default:
    /// `tracecontext,baggage`.
    fn propagators(&self) -> Result<(bool, bool), ConfigError> {
        let expected = "a list of `tracecontext`, `baggage`, or `none` (obs propagates W3C Trace Context and W3C \
                        Baggage; `b3`, `jaeger` and `xray` are not supported)";
        match self.choices("OTEL_PROPAGATORS", ["tracecontext", "baggage"], expected)? {
            None => Ok((true, true)),
            Some([trace, baggage]) => Ok((trace, baggage)),
        }
    }

    /// A comma-separated list of `names` (or `none`), as OpenTelemetry's list variables are:
    /// which of them it names (case-insensitive), `None` when the variable is not set; anything
    /// else is an error with `expected`.
    fn choices<const N: usize>(
        &self,
        variable: &'static str,
        names: [&str; N],
        expected: &'static str,
    ) -> Result<Option<[bool; N]>, ConfigError> {
        let Some(list) = self.get(variable) else { return Ok(None) };
        let mut chosen = [false; N];
        for name in list.split(',').map(|n| n.trim().to_ascii_lowercase()) {
            match names.iter().position(|n| *n == name) {
                Some(i) => chosen[i] = true,
                None if name == "none" => {}
                None => return Err(ConfigError { variable, value: list, expected, key: None }),
            }
        }
        Ok(Some(chosen))
    }

    /// `OTEL_LOGS_EXPORTER` (a list of `console`, `otlp`, or `none`) and, for `otlp`, where
    /// and how: the logs endpoint and headers (the signal's variable wins over the general one),
    /// the timeout and the batch processor's queue.
    fn log_exporters(&self) -> Result<(bool, Option<OtlpLogs>), ConfigError> {
        let expected = "`console` (log lines on standard output, the default), `otlp` (log records over OTLP/HTTP), \
                        both comma-separated, or `none`";
        let [console, otlp] =
            self.choices("OTEL_LOGS_EXPORTER", ["console", "otlp"], expected)?.unwrap_or([true, false]);
        if !otlp {
            return Ok((console, None));
        }
        let grpc = self.protocol_of("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL")? != Protocol::HttpProtobuf;
        // Over HTTP the generic endpoint gets the signal's path; gRPC has none.
        let endpoint = match (self.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"), self.get("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(url), _) => check_url("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", url)?,
            (None, Some(url)) if grpc => check_url("OTEL_EXPORTER_OTLP_ENDPOINT", url)?,
            (None, Some(url)) => {
                format!("{}/v1/logs", check_url("OTEL_EXPORTER_OTLP_ENDPOINT", url)?.trim_end_matches('/'))
            }
            (None, None) if grpc => "http://localhost:4317".into(),
            (None, None) => "http://localhost:4318/v1/logs".into(),
        };
        let headers = match (self.get("OTEL_EXPORTER_OTLP_LOGS_HEADERS"), self.get("OTEL_EXPORTER_OTLP_HEADERS")) {
            (Some(h), _) => otlp_headers("OTEL_EXPORTER_OTLP_LOGS_HEADERS", &h)?,
            (None, Some(h)) => otlp_headers("OTEL_EXPORTER_OTLP_HEADERS", &h)?,
            (None, None) => Vec::new(),
        };
        let timeout = match self.millis("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT")? {
            Some(t) => t,
            None => self.millis("OTEL_EXPORTER_OTLP_TIMEOUT")?.unwrap_or(Duration::from_secs(10)),
        };
        let queue = self.count("OTEL_BLRP_MAX_QUEUE_SIZE")?.unwrap_or(2048).max(1);
        let batch = self.count("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE")?.unwrap_or(512).clamp(1, queue);
        let delay = self.millis("OTEL_BLRP_SCHEDULE_DELAY")?.unwrap_or(Duration::from_secs(1));
        let budget = self.millis("OTEL_BLRP_EXPORT_TIMEOUT")?.unwrap_or(Duration::from_secs(30));
        Ok((console, Some(OtlpLogs { endpoint, grpc, headers, timeout, queue, batch, delay, budget })))
    }

    /// `OBS_TRACES_SAMPLING_RULES`: the compact form of [`SamplingRule::parse_list`].
    fn sampling_rules(&self) -> Result<Vec<SamplingRule>, ConfigError> {
        let Some(text) = self.get("OBS_TRACES_SAMPLING_RULES") else { return Ok(Vec::new()) };
        // The rule at fault is the value shown: with many rules, the whole list would hide it.
        SamplingRule::parse_list(&text).map_err(|e| ConfigError {
            variable: "OBS_TRACES_SAMPLING_RULES",
            value: e.rule,
            expected: e.why,
            key: None,
        })
    }

    /// `OBS_BAGGAGE_ATTRIBUTES`: comma-separated baggage keys.
    fn baggage_attributes(&self) -> Result<Vec<String>, ConfigError> {
        let Some(list) = self.get("OBS_BAGGAGE_ATTRIBUTES") else { return Ok(Vec::new()) };
        let keys: Vec<String> = list.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned).collect();
        if keys.iter().all(|k| valid_baggage_attribute(k)) {
            Ok(keys)
        } else {
            Err(ConfigError {
                variable: "OBS_BAGGAGE_ATTRIBUTES",
                value: list,
                expected: "comma-separated baggage keys of letters, digits, `_`, `.` and `-`, e.g. `tenant,experiment.id`",
                key: None,
            })
        }
    }

    fn limits(&self) -> Result<Limits, ConfigError> {
        let mut limits = Limits::default();
        // The span-specific variable wins over the general one, as the specification says.
        for (general, specific, slot) in [
            ("OTEL_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", &mut limits.attributes),
            ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", &mut limits.value_length),
        ] {
            if let Some(n) = self.count(specific)?.or(self.count(general)?) {
                *slot = n;
            }
        }
        for (name, slot) in [
            ("OTEL_SPAN_EVENT_COUNT_LIMIT", &mut limits.events),
            ("OTEL_SPAN_LINK_COUNT_LIMIT", &mut limits.links),
            ("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", &mut limits.event_attributes),
            ("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", &mut limits.link_attributes),
        ] {
            if let Some(n) = self.count(name)? {
                *slot = n;
            }
        }
        Ok(limits)
    }

    /// The head sampler, and whether a remote parent's decision wins (`parentbased_…`, the
    /// default).
    fn sampler(&self, environment: Environment) -> Result<(Sampler, bool), ConfigError> {
        let default_ratio = match environment {
            Environment::Development | Environment::Test => 1.0,
            Environment::Staging | Environment::Production => 0.1,
        };
        let ratio_arg = match self.get("OTEL_TRACES_SAMPLER_ARG") {
            None => None,
            Some(v) => match v.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Some(r),
                _ => {
                    let expected = "a number from 0 to 1, e.g. 0.1";
                    return Err(ConfigError { variable: "OTEL_TRACES_SAMPLER_ARG", value: v, expected, key: None });
                }
            },
        };
        let sampler_var = self.get("OTEL_TRACES_SAMPLER");
        let sampler_name = sampler_var.as_deref().map(str::trim);
        let parent_based = sampler_name.is_none_or(|s| s.starts_with("parentbased_"));
        let sampler = match sampler_name.map(|s| s.strip_prefix("parentbased_").unwrap_or(s)) {
            None => Sampler::Ratio(ratio_arg.unwrap_or(default_ratio)),
            Some("always_on") => Sampler::AlwaysOn,
            Some("always_off") => Sampler::AlwaysOff,
            Some("traceidratio") => Sampler::Ratio(ratio_arg.unwrap_or(1.0)),
            Some(_) => {
                return Err(ConfigError {
                    variable: "OTEL_TRACES_SAMPLER",
                    value: sampler_var.unwrap_or_default(),
                    expected: "`always_on`, `always_off`, `traceidratio` or their `parentbased_` forms",
                    key: None,
                });
            }
        };
        Ok((sampler, parent_based))
    }

    /// `OTEL_RESOURCE_ATTRIBUTES`, percent-decoded, and the `service.version` among them.
    #[allow(clippy::type_complexity)]
    fn resource_attributes(&self) -> Result<(Vec<(String, String)>, Option<String>), ConfigError> {
        let (mut attributes, mut service_version) = (Vec::new(), None);
        let Some(attrs) = self.get("OTEL_RESOURCE_ATTRIBUTES") else { return Ok((attributes, service_version)) };
        for pair in attrs.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
                return Err(ConfigError {
                    variable: "OTEL_RESOURCE_ATTRIBUTES",
                    value: attrs.clone(),
                    expected: "comma-separated `key=value` pairs, e.g. `team=tickets,region=eu`",
                    key: None,
                });
            };
            let (k, v) = (k.trim().to_owned(), crate::scrub::percent_decode(v.trim()));
            if k == "service.version" {
                service_version = Some(v.clone());
            }
            attributes.push((k, v));
        }
        Ok((attributes, service_version))
    }

    /// The Kubernetes attributes of the downward API's variables (a pod spec sets them from
    /// `fieldRef`s), where `OTEL_RESOURCE_ATTRIBUTES` does not set the key already.
    fn kubernetes_attributes(&self, attributes: &mut Vec<(String, String)>) {
        for (variable, key) in KUBERNETES_VARIABLES {
            if let Some(v) = self.get(variable)
                && !attributes.iter().any(|(k, _)| k == key)
            {
                attributes.push(((*key).to_owned(), v.trim().to_owned()));
            }
        }
    }

    /// OpenTelemetry's order: `OTEL_SERVICE_NAME`, then `service.name` in the resource
    /// attributes (then `unknown_service:<executable>`, by the caller).
    fn service_name(&self, resource_attributes: &[(String, String)]) -> Option<String> {
        self.get("OTEL_SERVICE_NAME").or_else(|| {
            resource_attributes.iter().rev().find(|(k, v)| k == "service.name" && !v.is_empty()).map(|(_, v)| v.clone())
        })
    }

    fn log_format(&self) -> Result<LogFormat, ConfigError> {
        match self.get("OBS_LOG_FORMAT").map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(LogFormat::Json),
            Some(f) if f == "json" => Ok(LogFormat::Json),
            Some(f) if f == "pretty" || f == "text" => Ok(LogFormat::Pretty),
            Some(f) => {
                Err(ConfigError { variable: "OBS_LOG_FORMAT", value: f, expected: "`json` or `pretty`", key: None })
            }
        }
    }

    fn log_filter(&self, environment: Environment) -> Result<tracing_subscriber::filter::Targets, ConfigError> {
        let Some(v) = self.get("RUST_LOG") else { return Ok(default_log_filter(environment)) };
        v.trim().parse().map_err(|_| ConfigError {
            variable: "RUST_LOG",
            value: v.clone(),
            expected: "comma-separated `level` or `target=level` directives, e.g. `info,revel=debug,hyper=warn`",
            key: None,
        })
    }

    fn tracing_spans(&self) -> Result<Option<tracing_subscriber::filter::Targets>, ConfigError> {
        let Some(v) = self.get("OBS_TRACING_SPANS") else { return Ok(None) };
        v.trim().parse().map(Some).map_err(|_| ConfigError {
            variable: "OBS_TRACING_SPANS",
            value: v.clone(),
            expected: "comma-separated `target=level` directives of the `tracing` spans to export, e.g. \
                       `hyper=info,my_crate::legacy=debug`",
            key: None,
        })
    }

    fn scrub_rules(&self) -> Result<crate::scrub::Rules, ConfigError> {
        let mut scrub = crate::scrub::Rules::default();
        if let Some(keys) = self.get("OBS_SCRUB_KEYS") {
            for k in keys.split(',').map(str::trim).filter(|k| !k.is_empty()) {
                scrub = scrub.redact_key(k);
            }
        }
        if let Some(v) = self.get("OBS_SCRUB_ADDRESS") {
            scrub = scrub.redact_address(parse_bool("OBS_SCRUB_ADDRESS", &v)?);
        }
        if let Some(v) = self.get("OBS_SCRUB_PHONE_NUMBER") {
            scrub = scrub.redact_phone_number(parse_bool("OBS_SCRUB_PHONE_NUMBER", &v)?);
        }
        Ok(scrub)
    }

    fn profiling(&self, environment: Environment) -> Result<Profiling, ConfigError> {
        let continuous = self.bool("OBS_PROFILING", true)?;
        let max_seconds =
            self.ranged("OBS_PROFILING_MAX_SECONDS", 1..=300, 60, "a whole number of seconds from 1 to 300, e.g. 60")?;
        let mut profiling = Profiling {
            endpoints: self.bool("OBS_PROFILING_ENDPOINTS", environment == Environment::Development)?,
            token: self.get("OBS_PROFILING_TOKEN").map(|t| Secret(t.trim().to_owned())),
            max_duration: Duration::from_secs(max_seconds),
            frequency: self.ranged(
                "OBS_PROFILING_HZ",
                1..=1000,
                100,
                "a sampling frequency from 1 to 1000 Hz, e.g. 100",
            )?,
            continuous,
            // Continuous profiling samples only when there is somewhere to send the samples;
            // the address is read only where it is used.
            pyroscope: match self.get("PYROSCOPE_SERVER_ADDRESS") {
                // Without the `pyroscope` feature it is kept unchecked (it cannot be used, so it
                // must not stop the service), and `init` says it is unused.
                Some(url) if continuous && !cfg!(feature = "pyroscope") => Some(url),
                Some(url) if continuous => Some(pyroscope_url(&url).ok_or(ConfigError {
                    variable: "PYROSCOPE_SERVER_ADDRESS",
                    value: url,
                    expected: "an http:// URL, e.g. http://pyroscope:4040 (https: through a local proxy or collector)",
                    key: None,
                })?),
                _ => None,
            },
            pyroscope_tenant: None,
            pyroscope_auth: None,
            upload_interval: Duration::from_secs(10),
        };
        // Read only when profiles are sent somewhere, like the address.
        if cfg!(feature = "pyroscope") && profiling.pyroscope.is_some() {
            profiling.pyroscope_tenant = self.pyroscope_tenant()?;
            profiling.pyroscope_auth = self.pyroscope_auth()?;
        }
        Ok(profiling)
    }

    fn viewer(&self, environment: Environment) -> Result<Viewer, ConfigError> {
        let development = environment == Environment::Development;
        let on = self.bool("OBS_VIEWER", development)?;
        let token = self.get("OBS_VIEWER_TOKEN").map(|t| Secret(t.trim().to_owned()));
        // It travels in a cookie too: nothing a cookie value cannot hold.
        if token.as_ref().is_some_and(|t| !t.0.bytes().all(|b| b.is_ascii_graphic() && !b"\";,\\".contains(&b))) {
            return Err(ConfigError {
                variable: "OBS_VIEWER_TOKEN",
                value: "(not shown)".into(),
                expected: "visible ASCII without quotes, commas, semicolons, backslashes or spaces, e.g. a hex string",
                key: None,
            });
        }
        if on && !development && token.is_none() {
            // Its pages show every trace and log line: not without a token outside development.
            return Err(ConfigError {
                variable: "OBS_VIEWER",
                value: self.get("OBS_VIEWER").unwrap_or_default(),
                expected: "false outside development unless OBS_VIEWER_TOKEN is set (the viewer shows traces and logs)",
                key: None,
            });
        }
        let grafana = match self.get("OBS_GRAFANA_URL") {
            None => None,
            Some(url) => {
                let base = url.trim().trim_end_matches('/');
                let host = base.strip_prefix("http://").or_else(|| base.strip_prefix("https://"));
                if host.is_none_or(|h| h.is_empty() || h.contains(char::is_whitespace)) {
                    return Err(ConfigError {
                        variable: "OBS_GRAFANA_URL",
                        value: url,
                        expected: "Grafana's base URL, http:// or https://, e.g. http://localhost:3000",
                        key: None,
                    });
                }
                Some(base.to_owned())
            }
        };
        Ok(Viewer { on, token, grafana })
    }

    fn pyroscope_tenant(&self) -> Result<Option<String>, ConfigError> {
        let Some(tenant) = self.get("PYROSCOPE_TENANT_ID") else { return Ok(None) };
        let tenant = tenant.trim().to_owned();
        if !valid_header_value(&tenant) {
            return Err(ConfigError {
                variable: "PYROSCOPE_TENANT_ID",
                value: tenant,
                expected: "a tenant id without control characters, e.g. `acme`",
                key: None,
            });
        }
        Ok(Some(tenant))
    }

    fn pyroscope_auth(&self) -> Result<Option<(String, Secret)>, ConfigError> {
        match (self.get("PYROSCOPE_BASIC_AUTH_USER"), self.get("PYROSCOPE_BASIC_AUTH_PASSWORD")) {
            (Some(user), Some(password)) => Ok(Some((user.trim().to_owned(), Secret(password)))),
            (None, None) => Ok(None),
            // One of the pair without the other.
            (Some(_), None) => Err(ConfigError {
                variable: "PYROSCOPE_BASIC_AUTH_PASSWORD",
                value: String::new(),
                expected: "a password, since PYROSCOPE_BASIC_AUTH_USER is set",
                key: None,
            }),
            (None, Some(_)) => Err(ConfigError {
                variable: "PYROSCOPE_BASIC_AUTH_USER",
                value: String::new(),
                expected: "a user name, since PYROSCOPE_BASIC_AUTH_PASSWORD is set",
                key: None,
            }),
        }
    }
}

impl Config {
    /// The configuration from the process environment, or from the file `OTEL_CONFIG_FILE` names
    /// (see [`from_vars`](Config::from_vars)).
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(|name| std::env::var(name).ok())
    }

    /// The configuration from `lookup` (e.g. a map in tests) instead of the process environment.
    ///
    /// When `OTEL_CONFIG_FILE` is set, the file it names is read instead (OpenTelemetry's
    /// declarative configuration, `file_format: "1.0"`, with obs's own settings under `obs`;
    /// feature `config-file`), its `${VAR}` references taken from `lookup`; `lookup` is then not
    /// read for the variables the file can set. An error names the file's key.
    ///
    /// ```
    /// # #[cfg(feature = "config-file")] {
    /// use obs_runtime::config::Config;
    ///
    /// let path = std::env::temp_dir().join(format!("obs-doc-{}.yaml", std::process::id()));
    /// std::fs::write(&path, r#"
    /// file_format: "1.0"
    /// tracer_provider:
    ///   processors:
    ///     - batch:
    ///         exporter:
    ///           otlp_http:
    ///             endpoint: ${COLLECTOR:-http://localhost:4318}/v1/traces
    ///   sampler:
    ///     parent_based:
    ///       root:
    ///         trace_id_ratio_based:
    ///           ratio: 0.25
    /// obs:
    ///   env: production
    /// "#).unwrap();
    /// let file = path.display().to_string();
    /// let config = Config::from_vars(|name| (name == "OTEL_CONFIG_FILE").then(|| file.clone())).unwrap();
    /// assert_eq!(config.sampling_ratio(), 0.25);
    /// # std::fs::remove_file(&path).unwrap();
    /// # }
    /// ```
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        match lookup("OTEL_CONFIG_FILE").filter(|v| !v.trim().is_empty()) {
            Some(path) => Config::from_file(&path, &lookup),
            None => Config::from_lookup(&lookup),
        }
    }

    #[cfg(feature = "config-file")]
    fn from_file(path: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let vars = file::load(path, env)?;
        let lookup = |name: &str| match vars.get(name) {
            Some((value, _)) => Some(value.clone()),
            None if file::governs(name) => None,
            None => env(name),
        };
        // An error names the key the value came from.
        Config::from_lookup(&lookup).map_err(|mut e| {
            e.key = vars.get(e.variable).map(|(_, key)| key.clone());
            e
        })
    }

    #[cfg(not(feature = "config-file"))]
    fn from_file(path: &str, _env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Err(ConfigError {
            variable: "OTEL_CONFIG_FILE",
            value: path.to_owned(),
            expected: "unset: this build of obs-runtime reads no configuration file (enable its `config-file` feature)",
            key: None,
        })
    }

    fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let vars = Vars(&lookup);
        let (environment, environment_named) = vars.environment()?;
        let protocol = vars.protocol()?;
        let traces_endpoint = vars.traces_endpoint(protocol, environment)?;
        // Development without a collector: spans as JSON lines in a local file.
        let spans_file = match &traces_endpoint {
            None => Some(vars.get("OBS_SPANS_FILE").unwrap_or_else(|| "obs-spans.jsonl".into()).into()),
            Some(_) => None,
        };
        let (traces_endpoint, spans_file) =
            if vars.exporting()? { (traces_endpoint, spans_file) } else { (None, None) };
        let (queue_capacity, batch_size) = vars.queue()?;
        let (propagate, baggage) = vars.propagators()?;
        let (sampler, parent_based) = vars.sampler(environment)?;
        let (mut resource_attributes, service_version) = vars.resource_attributes()?;
        vars.kubernetes_attributes(&mut resource_attributes);
        let service_name = vars.service_name(&resource_attributes);
        let (console_logs, otlp_logs) = vars.log_exporters()?;
        Ok(Config {
            console_logs,
            otlp_logs,
            profiling: vars.profiling(environment)?,
            viewer: vars.viewer(environment)?,
            logs: true,
            log_format: vars.log_format()?,
            log_filter: vars.log_filter(environment)?,
            tracing_spans: vars.tracing_spans()?,
            process_metrics: true,
            build_commit: None,
            scrub: vars.scrub_rules()?,
            log_writer: None,
            enabled: vars.bool("ENABLE_OBSERVABILITY", environment != Environment::Test)?,
            environment,
            environment_named,
            service_named: service_name.is_some(),
            service_name: service_name.unwrap_or_else(unknown_service),
            service_version,
            traces_endpoint,
            otlp_headers: vars.otlp_headers()?,
            protocol,
            spans_file,
            sampler,
            sampling_rules: vars.sampling_rules()?,
            parent_based,
            keep_error_traces: vars.bool("OBS_TRACES_KEEP_ERRORS", true)?,
            keep_slow_traces: vars.millis_or_off(
                "OBS_TRACES_KEEP_SLOW_MS",
                Duration::from_secs(2),
                "a whole number of milliseconds (0 keeps no trace for slowness), e.g. 2000",
            )?,
            db_slow_query: vars.millis_or_off(
                "OBS_DB_SLOW_QUERY_MS",
                Duration::from_secs(1),
                "a whole number of milliseconds (0 logs no query as slow), e.g. 1000",
            )?,
            resource_attributes,
            queue_capacity,
            batch_size,
            schedule_delay: vars.millis("OTEL_BSP_SCHEDULE_DELAY")?.unwrap_or(Duration::from_millis(200)),
            export_timeout: match vars.millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")? {
                Some(t) => t,
                None => vars.millis("OTEL_EXPORTER_OTLP_TIMEOUT")?.unwrap_or(Duration::from_secs(10)),
            },
            export_budget: vars.millis("OTEL_BSP_EXPORT_TIMEOUT")?.unwrap_or(Duration::from_secs(30)),
            propagate,
            baggage,
            baggage_attributes: vars.baggage_attributes()?,
            limits: vars.limits()?,
            shutdown_timeout: Duration::from_secs(3),
        })
    }

    /// Turns everything on or off (`ENABLE_OBSERVABILITY`): off, [`init`](crate::init) starts
    /// nothing and the macros, the HTTP layer and the task wrapper record nothing.
    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }
    /// The environment (`OBS_ENV`).
    pub fn environment(&self) -> Environment {
        self.environment
    }
    /// `service.name`, whatever the environment says (see [`Config::default_service_name`] for a
    /// name the environment may override).
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = name.into();
        self.service_named = true;
        self
    }
    /// `service.name` unless the environment names the service: `OTEL_SERVICE_NAME`, or
    /// `service.name` in `OTEL_RESOURCE_ATTRIBUTES` (in that order, as OpenTelemetry specifies).
    /// Without either, the name is `unknown_service:<executable>`.
    ///
    /// ```
    /// use obs_runtime::config::Config;
    /// let env = |name: &str| (name == "OTEL_RESOURCE_ATTRIBUTES").then(|| "service.name=tickets-eu".to_owned());
    /// let config = Config::from_vars(env).unwrap().default_service_name("tickets");
    /// assert_eq!(config.service(), "tickets-eu");
    /// assert_eq!(Config::from_vars(|_| None).unwrap().default_service_name("tickets").service(), "tickets");
    /// ```
    pub fn default_service_name(self, name: impl Into<String>) -> Self {
        if self.service_named { self } else { self.service_name(name) }
    }
    /// The service name spans are exported under.
    pub fn service(&self) -> &str {
        &self.service_name
    }
    /// `service.version`, e.g. `env!("CARGO_PKG_VERSION")`.
    pub fn service_version(mut self, version: impl Into<String>) -> Self {
        self.service_version = Some(version.into());
        self
    }
    /// Where spans go: the full OTLP/HTTP traces URL, e.g. `http://tempo:4318/v1/traces`.
    pub fn traces_endpoint(mut self, url: impl Into<String>) -> Self {
        self.traces_endpoint = Some(url.into());
        self.spans_file = None;
        self
    }
    /// Adds a header to every export request, e.g. `X-Scope-OrgID` for a multi-tenant Tempo or
    /// `Authorization` (as `OTEL_EXPORTER_OTLP_HEADERS=x-scope-orgid=acme` does). The value is
    /// sent as given (not percent-decoded) and not shown by `Config`'s `Debug`. It replaces a
    /// header of the same name read from `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`; each header is
    /// sent once, with one value, over HTTP and gRPC alike.
    ///
    /// # Panics
    /// If `name` is not an HTTP header name or `value` holds a control character: both are
    /// written by the program, not read from outside.
    pub fn otlp_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value) = (name.into(), value.into());
        assert!(valid_header_name(&name), "{name:?} is not an HTTP header name");
        assert!(valid_header_value(&value), "the value of the OTLP header {name:?} holds a control character");
        set_header(&mut self.otlp_headers, &name, value);
        self
    }
    /// The OTLP transport. With `Protocol::Grpc` (feature `grpc`) the endpoint is the collector's address, e.g.
    /// `http://tempo:4317`.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }
    /// Writes spans as JSON lines to `path` instead of exporting them (the development default,
    /// `obs-spans.jsonl` or `OBS_SPANS_FILE`, when no endpoint is set).
    pub fn spans_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.traces_endpoint = None;
        self.spans_file = Some(path.into());
        self
    }
    /// Head sampler of root spans.
    pub fn sampler(mut self, sampler: Sampler) -> Self {
        self.sampler = sampler;
        self
    }
    /// Also exports every log line as an OTLP log record, over HTTP to `url` (the logs URL, used
    /// as is: `http://collector:4318/v1/logs`), as `OTEL_LOGS_EXPORTER=otlp` does with
    /// `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`: severity, body, attributes (scrubbed as on the
    /// console), trace and span ids, and the spans' resource. Records wait in a bounded queue; a
    /// batch the collector cannot take for now (429, 502–504, the network) is retried with
    /// backoff for up to 30 s (`OTEL_BLRP_EXPORT_TIMEOUT`); a full queue or a batch given up
    /// drops them and counts them in `obs_log_lines_dropped_total`.
    pub fn otlp_logs(mut self, url: impl Into<String>) -> Self {
        let defaults = OtlpLogs {
            endpoint: String::new(),
            grpc: false,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            queue: 2048,
            batch: 512,
            delay: Duration::from_secs(1),
            budget: Duration::from_secs(30),
        };
        self.otlp_logs = Some(OtlpLogs { endpoint: url.into(), ..self.otlp_logs.take().unwrap_or(defaults) });
        self
    }
    /// Whether log lines go to the console (standard output, or the
    /// [`log_writer`](Self::log_writer)); `false` with [`otlp_logs`](Self::otlp_logs) sends
    /// them over OTLP only (`OTEL_LOGS_EXPORTER=otlp`).
    pub fn console_logs(mut self, on: bool) -> Self {
        self.console_logs = on;
        self
    }
    /// Rules that decide, before the [`sampler`](Self::sampler)'s ratio, whether a root span is
    /// sampled, by its name, HTTP route and method (`OBS_TRACES_SAMPLING_RULES`; none by
    /// default). The first that matches decides; see [`SamplingRule`].
    ///
    /// ```
    /// use obs_runtime::config::{Config, SamplingRule};
    /// let config = Config::from_vars(|_| None).unwrap().sampling_rules([
    ///     SamplingRule::route("/healthz").never(),
    ///     SamplingRule::route("/metrics").never(),
    ///     SamplingRule::name("ticket.checkout").always(),
    /// ]);
    /// # drop(config);
    /// ```
    pub fn sampling_rules(mut self, rules: impl IntoIterator<Item = SamplingRule>) -> Self {
        self.sampling_rules = rules.into_iter().collect();
        self
    }
    /// Whether a trace continued from a caller (W3C `traceparent`) is sampled as the caller
    /// decided (the default: OpenTelemetry's `parentbased_*` samplers), or as this service's
    /// [`sampler`](Self::sampler) decides for its own roots (`OTEL_TRACES_SAMPLER=always_on`,
    /// `always_off` or `traceidratio`). A span whose parent is in this process always follows it.
    /// The same holds for a background task's trace and the trace that enqueued it
    /// ([`Task::enqueued_here`](crate::task::Task::enqueued_here)): parent-based, a task of a
    /// sampled request is sampled and one of a dropped request is not (unless it fails or is slow).
    pub fn parent_based(mut self, on: bool) -> Self {
        self.parent_based = on;
        self
    }
    /// Whether the root span of a trace the head sampler dropped is exported anyway when it fails
    /// (`OBS_TRACES_KEEP_ERRORS`, default on).
    pub fn keep_error_traces(mut self, on: bool) -> Self {
        self.keep_error_traces = on;
        self
    }
    /// Root spans of dropped traces lasting at least this long are exported anyway
    /// (`OBS_TRACES_KEEP_SLOW_MS`, default 2 s; `None` or `0` for never).
    pub fn keep_slow_traces(mut self, threshold: Option<Duration>) -> Self {
        self.keep_slow_traces = threshold.filter(|d| !d.is_zero());
        self
    }
    /// The keys of the request's W3C baggage copied, scrubbed, onto its server span (as
    /// attributes of the same name) and its log lines (`OBS_BAGGAGE_ATTRIBUTES`, default none:
    /// baggage is the caller's data, and may carry personal data).
    ///
    /// # Panics
    /// If a key has another character than letters, digits, `_`, `.` and `-`.
    pub fn baggage_attributes<'a>(mut self, keys: impl IntoIterator<Item = &'a str>) -> Self {
        self.baggage_attributes = keys.into_iter().map(str::to_owned).collect();
        assert!(
            self.baggage_attributes.iter().all(|k| valid_baggage_attribute(k)),
            "baggage attribute keys are letters, digits, `_`, `.` and `-`: {:?}",
            self.baggage_attributes
        );
        self
    }
    /// A database query lasting at least this long writes a WARN line with its text (literals
    /// replaced) and duration (`OBS_DB_SLOW_QUERY_MS`, default 1 s; `None` or `0` for never).
    /// Used by `obs_runtime::db` (features `sqlx-sqlite`, `sqlx-postgres`).
    pub fn db_slow_query(mut self, threshold: Option<Duration>) -> Self {
        self.db_slow_query = threshold.filter(|d| !d.is_zero());
        self
    }
    /// Finished spans waiting for export, at most; past it they are dropped and counted in
    /// `obs_spans_dropped_total`.
    pub fn queue_capacity(mut self, spans: usize) -> Self {
        self.queue_capacity = spans.max(1);
        self
    }
    /// Longest time one export request may take (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`: milliseconds, default 10 s). A batch the backend throttles or
    /// cannot take now is tried again, with backoff, for up to `OTEL_BSP_EXPORT_TIMEOUT` (30 s).
    pub fn export_timeout(mut self, timeout: Duration) -> Self {
        self.export_timeout = timeout;
        self
    }
    /// The on-demand profiling endpoints' settings, for
    /// [`profile::router`](crate::profile::router): on in development, off elsewhere unless
    /// `OBS_PROFILING_ENDPOINTS=true`, behind `OBS_PROFILING_TOKEN` if set.
    #[cfg(all(feature = "profiling", feature = "axum"))]
    pub fn profiling_endpoints(&self) -> EndpointSettings {
        let p = &self.profiling;
        let mut s = EndpointSettings::default().enabled(p.endpoints && self.enabled).max_duration(p.max_duration);
        s.frequency = p.frequency;
        if let Some(t) = &p.token {
            s = s.token(t.0.clone());
        }
        s
    }
    /// The built-in viewer's settings, for [`viewer::router`](crate::viewer::router): on in
    /// development, off elsewhere unless `OBS_VIEWER=true` (which then needs `OBS_VIEWER_TOKEN`);
    /// links into Grafana with `OBS_GRAFANA_URL`.
    #[cfg(feature = "viewer")]
    pub fn viewer(&self) -> viewer::Settings {
        viewer::Settings::from_config(self)
    }
    /// Continuous profiling to the Grafana Pyroscope server at `url` (e.g. `http://pyroscope:4040`;
    /// `PYROSCOPE_SERVER_ADDRESS`), or none; with the `pyroscope` feature.
    ///
    /// An address that is not `http://` turns continuous profiling off, with a warning at `init`
    /// (there is no TLS client; put a local proxy or collector in front).
    ///
    /// The tenant and credentials read from the environment with `PYROSCOPE_SERVER_ADDRESS` are
    /// forgotten (they belong to that server): set them after this, with
    /// [`pyroscope_tenant`](Self::pyroscope_tenant) and
    /// [`pyroscope_basic_auth`](Self::pyroscope_basic_auth).
    pub fn pyroscope(mut self, url: Option<&str>) -> Self {
        self.profiling.pyroscope = url.map(|u| pyroscope_url(u).unwrap_or_else(|| u.to_owned()));
        self.profiling.pyroscope_tenant = None;
        self.profiling.pyroscope_auth = None;
        self
    }
    /// The tenant of a multi-tenant Pyroscope, sent as `X-Scope-OrgID` with every push
    /// (`PYROSCOPE_TENANT_ID`).
    ///
    /// # Panics
    /// If `tenant` holds a control character.
    pub fn pyroscope_tenant(mut self, tenant: impl Into<String>) -> Self {
        let tenant = tenant.into();
        assert!(valid_header_value(&tenant), "the Pyroscope tenant id {tenant:?} holds a control character");
        self.profiling.pyroscope_tenant = Some(tenant);
        self
    }
    /// Basic authentication for every push (`PYROSCOPE_BASIC_AUTH_USER` and
    /// `PYROSCOPE_BASIC_AUTH_PASSWORD`; the password is not shown by `Config`'s `Debug`).
    pub fn pyroscope_basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.profiling.pyroscope_auth = Some((user.into(), Secret(password.into())));
        self
    }
    /// How long each continuous profile covers, i.e. how often one is pushed (default 10 s).
    pub fn profiling_interval(mut self, interval: Duration) -> Self {
        self.profiling.upload_interval = interval.max(Duration::from_secs(1));
        self
    }
    /// The sampling frequency of continuous profiles, and of on-demand ones that do not ask for
    /// another, 1 to 1000 Hz (`OBS_PROFILING_HZ`, default 100).
    pub fn profiling_frequency(mut self, hz: u32) -> Self {
        self.profiling.frequency = hz.clamp(1, 1000);
        self
    }
    /// Longest time the guard's drop waits for the last export.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }
    /// Whether `init` installs the log layer as the global `tracing` subscriber (default on).
    /// Turn it off to add [`LogLayer`](crate::logs::LogLayer) to a subscriber of your own.
    pub fn logs(mut self, on: bool) -> Self {
        self.logs = on;
        self
    }
    /// How log lines look (`OBS_LOG_FORMAT`: `json`, the default, or `pretty`).
    pub fn log_format(mut self, format: LogFormat) -> Self {
        self.log_format = format;
        self
    }
    /// Hands each log line (with its `\n`) to `write` instead of standard output: to capture logs
    /// in tests, or to write them somewhere of your own.
    pub fn log_writer(mut self, write: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        self.log_writer = Some(LogWriter(std::sync::Arc::new(write)));
        self
    }
    /// Which events are logged (`RUST_LOG`; by default `debug` in development, `info` elsewhere,
    /// with the chattiest HTTP crates at `info`/`warn`).
    pub fn log_filter(mut self, filter: tracing_subscriber::filter::Targets) -> Self {
        self.log_filter = filter;
        self
    }
    /// Which `tracing` spans (of the libraries a service uses, or its own
    /// `#[tracing::instrument]` code) become obs spans, exported with its traces
    /// (`OBS_TRACING_SPANS=hyper=info,my_crate::legacy=debug`; none by default). A span the
    /// directives accept, started inside a sampled obs span, becomes its child, with its fields
    /// as scrubbed attributes and its events as span events; elsewhere the bridge does nothing.
    /// The bridge is a layer of the subscriber `init` installs (with [`logs(false)`](Self::logs)
    /// and a bridge, `init` installs a subscriber for the bridge alone).
    ///
    /// ```
    /// let filter: tracing_subscriber::filter::Targets = "legacy_billing=info".parse().unwrap();
    /// let config = obs_runtime::config::Config::from_vars(|_| None).unwrap().tracing_spans(Some(filter));
    /// # let _ = config;
    /// ```
    pub fn tracing_spans(mut self, filter: Option<tracing_subscriber::filter::Targets>) -> Self {
        self.tracing_spans = filter;
        self
    }
    /// Whether `init` adds the process metrics (`process_cpu_seconds_total`,
    /// `process_resident_memory_bytes`, …) to `/metrics` (default on; Linux, feature `process`).
    pub fn process_metrics(mut self, on: bool) -> Self {
        self.process_metrics = on;
        self
    }
    /// The commit the binary was built from, for `obs_build_info{commit}` (dashboards mark
    /// deploys with it), e.g. `option_env!("GIT_COMMIT")` set by the build.
    pub fn build_commit(mut self, commit: Option<&str>) -> Self {
        self.build_commit = commit.map(str::to_owned);
        self
    }
    /// What is redacted (or kept) by key beyond the built-in rules, added to what the environment
    /// asks (`OBS_SCRUB_KEYS=iban,tax_id`, `OBS_SCRUB_ADDRESS=true`,
    /// `OBS_SCRUB_PHONE_NUMBER=true`): a key either redacts is redacted, and code cannot turn off
    /// address or phone redaction the environment turned on.
    pub fn scrub(mut self, rules: crate::scrub::Rules) -> Self {
        self.scrub = std::mem::take(&mut self.scrub).merged(rules);
        self
    }
    /// The fraction of root spans sampled (1 for always on, 0 for always off).
    pub fn sampling_ratio(&self) -> f64 {
        self.sampler.ratio()
    }
}

impl Sampler {
    /// The fraction of root spans sampled (1 for always on, 0 for always off).
    pub fn ratio(self) -> f64 {
        match self {
            Sampler::AlwaysOn => 1.0,
            Sampler::AlwaysOff => 0.0,
            Sampler::Ratio(r) => r,
        }
    }
}

/// A Pyroscope address: `http://host[:port][/path]`, the scheme in any case; no trailing `/`.
fn pyroscope_url(url: &str) -> Option<String> {
    let u = url.trim();
    let rest = u.get(..7).filter(|s| s.eq_ignore_ascii_case("http://")).map(|_| &u[7..])?;
    (!rest.is_empty()).then(|| format!("http://{}", rest.trim_end_matches('/')))
}

/// `key=value` pairs separated by commas, values percent-decoded (the OpenTelemetry format of
/// `OTEL_EXPORTER_OTLP_HEADERS`). The error does not repeat the value: it may hold credentials.
fn otlp_headers(variable: &'static str, text: &str) -> Result<Vec<(String, Secret)>, ConfigError> {
    let mut headers: Vec<(String, Secret)> = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parsed = pair.split_once('=').and_then(|(k, v)| {
            let (k, v) = (k.trim(), crate::scrub::percent_decode(v.trim()));
            (valid_header_name(k) && valid_header_value(&v)).then(|| (k.to_owned(), v))
        });
        let Some((name, value)) = parsed else {
            return Err(ConfigError {
                variable,
                value: "(not shown: it may hold credentials)".into(),
                expected: "comma-separated `name=value` header pairs, values percent-encoded, e.g. \
                           `x-scope-orgid=acme,authorization=Basic%20YWxhZGRpbjpvcGVuc2VzYW1l`",
                key: None,
            });
        };
        set_header(&mut headers, &name, value);
    }
    Ok(headers)
}

/// Sets header `name` (any case, kept lower-cased) in `headers`, replacing an earlier value.
fn set_header(headers: &mut Vec<(String, Secret)>, name: &str, value: String) {
    let name = name.to_ascii_lowercase();
    headers.retain(|(n, _)| *n != name);
    headers.push((name, Secret(value)));
}

/// An HTTP token (RFC 9110): what a header name may be.
fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// No control characters (a `\r\n` would start another header), tabs allowed.
fn valid_header_value(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// An OTLP endpoint: `http://` only, as the exporter is built without a TLS client (a collector
/// on the same network, such as Alloy, forwards over TLS where needed).
fn check_url(variable: &'static str, url: String) -> Result<String, ConfigError> {
    let u = url.trim();
    if u.starts_with("http://") && u.len() > "http://".len() {
        Ok(u.to_owned())
    } else {
        let expected = if u.starts_with("https://") {
            "an http:// URL: obs exports without TLS (send to a local collector, e.g. Alloy, that forwards over TLS)"
        } else {
            "an http:// URL, e.g. http://localhost:4318"
        };
        Err(ConfigError { variable, value: url, expected, key: None })
    }
}

// Settings types that other modules read: defined here, below them (config depends on none of
// them; they depend on config). `logs::LogFormat` is re-exported where it was.

/// The longest CPU profile taken (on demand or over HTTP).
#[cfg(feature = "profiling")]
pub(crate) const MAX_PROFILE_DURATION: Duration = Duration::from_secs(300);

/// Who may take profiles over HTTP, and how long.
///
/// From the environment with [`Config::profiling_endpoints`](crate::config::Config::profiling_endpoints):
/// on in development, off elsewhere unless `OBS_PROFILING_ENDPOINTS=true`; `OBS_PROFILING_TOKEN`
/// requires `Authorization: Bearer <token>`; `OBS_PROFILING_MAX_SECONDS` (default 60) bounds a
/// profile.
#[cfg(all(feature = "profiling", feature = "axum"))]
#[derive(Clone)]
pub struct EndpointSettings {
    pub(crate) enabled: bool,
    pub(crate) token: Option<std::sync::Arc<str>>,
    pub(crate) max_duration: Duration,
    pub(crate) frequency: u32,
}

#[cfg(all(feature = "profiling", feature = "axum"))]
impl std::fmt::Debug for EndpointSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSettings")
            .field("enabled", &self.enabled)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("max_duration", &self.max_duration)
            .field("frequency", &self.frequency)
            .finish()
    }
}

#[cfg(all(feature = "profiling", feature = "axum"))]
impl Default for EndpointSettings {
    /// On, no token, at most 60 s, 100 Hz.
    fn default() -> Self {
        EndpointSettings { enabled: true, token: None, max_duration: Duration::from_secs(60), frequency: 100 }
    }
}

#[cfg(all(feature = "profiling", feature = "axum"))]
impl EndpointSettings {
    /// Whether the endpoints answer (a disabled router answers 404).
    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }
    /// Requires `Authorization: Bearer <token>`.
    ///
    /// # Panics
    /// If `token` is empty or blank: a request without the header would match it.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        assert!(!token.trim().is_empty(), "a profiling token must not be empty");
        self.token = Some(std::sync::Arc::from(token.trim()));
        self
    }
    /// The longest profile accepted (at most 300 s).
    pub fn max_duration(mut self, max: Duration) -> Self {
        self.max_duration = max.clamp(Duration::from_secs(1), MAX_PROFILE_DURATION);
        self
    }
}

/// Attributes (and events) a span keeps at most, as OpenTelemetry's default limit; more are
/// counted as dropped.
pub(crate) const MAX_ATTRIBUTES: usize = 128;

/// OpenTelemetry's span limits (`OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`, `OTEL_ATTRIBUTE_COUNT_LIMIT`,
/// `…_VALUE_LENGTH_LIMIT`, `OTEL_SPAN_EVENT_COUNT_LIMIT`, `OTEL_SPAN_LINK_COUNT_LIMIT`,
/// `OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT`, `OTEL_LINK_ATTRIBUTE_COUNT_LIMIT`). A count above 128 is
/// held to 128: the bound that keeps a span's memory small on the request path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) attributes: usize,
    /// Longest string attribute value, in bytes (cut at a character boundary).
    pub(crate) value_length: usize,
    pub(crate) events: usize,
    pub(crate) links: usize,
    pub(crate) event_attributes: usize,
    /// Links carry no attributes here: any value is honoured.
    pub(crate) link_attributes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            attributes: MAX_ATTRIBUTES,
            value_length: usize::MAX,
            events: MAX_ATTRIBUTES,
            links: MAX_ATTRIBUTES,
            event_attributes: MAX_ATTRIBUTES,
            link_attributes: MAX_ATTRIBUTES,
        }
    }
}

/// How lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (for Loki; the default).
    Json,
    /// `2026-11-28T20:39:22.123456Z  INFO target: message key=value …` for a terminal.
    Pretty,
}

/// A function taking each line.
pub(crate) type LineFn = std::sync::Arc<dyn Fn(&[u8]) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_vars(move |n| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
    }

    #[test]
    fn sqlx_statement_lines_are_off_by_default() {
        use tracing::Level;
        for env in [Environment::Development, Environment::Production] {
            let f = default_log_filter(env);
            assert!(!f.would_enable("sqlx::query", &Level::ERROR));
            assert!(f.would_enable("sqlx::pool", &Level::INFO), "other sqlx lines stay");
        }
    }

    #[test]
    fn viewer_settings() {
        assert!(cfg(&[]).unwrap().viewer.on, "on in development");
        for env in ["staging", "production", "test"] {
            assert!(!cfg(&[("OBS_ENV", env)]).unwrap().viewer.on, "off in {env}");
        }
        // Outside development, only with a token.
        let e = cfg(&[("OBS_ENV", "production"), ("OBS_VIEWER", "true")]).unwrap_err();
        assert_eq!(e.variable, "OBS_VIEWER");
        assert!(e.to_string().contains("OBS_VIEWER_TOKEN"), "{e}");
        let c = cfg(&[("OBS_ENV", "production"), ("OBS_VIEWER", "true"), ("OBS_VIEWER_TOKEN", " s3cret ")]).unwrap();
        assert!(c.viewer.on);
        assert_eq!(c.viewer.token, Some(Secret("s3cret".into())));
        assert!(!format!("{c:?}").contains("s3cret"), "the token is not printed");
        assert_eq!(
            cfg(&[("OBS_GRAFANA_URL", "http://localhost:3000/")]).unwrap().viewer.grafana.as_deref(),
            Some("http://localhost:3000")
        );
        for bad in ["localhost:3000", "http://", "ftp://grafana", "http://a b"] {
            assert_eq!(cfg(&[("OBS_GRAFANA_URL", bad)]).unwrap_err().variable, "OBS_GRAFANA_URL", "{bad}");
        }
        assert_eq!(cfg(&[("OBS_VIEWER", "maybe")]).unwrap_err().variable, "OBS_VIEWER");
        let e = cfg(&[("OBS_VIEWER_TOKEN", "abc;def")]).unwrap_err();
        assert_eq!(e.variable, "OBS_VIEWER_TOKEN");
        assert!(!e.to_string().contains("abc;def"), "the token is not echoed: {e}");
    }

    #[test]
    fn profiling_settings() {
        let c = cfg(&[]).unwrap();
        assert!(c.profiling.endpoints, "development serves profiles on demand");
        assert_eq!(c.profiling.pyroscope, None, "no address, no continuous sampling");
        let p = cfg(&[("OBS_ENV", "production")]).unwrap();
        assert!(!p.profiling.endpoints);
        assert_eq!(p.profiling.pyroscope, None);
        for (var, value) in
            [("OBS_PROFILING_HZ", "0"), ("OBS_PROFILING_MAX_SECONDS", "301"), ("OBS_PROFILING", "maybe")]
        {
            let e = cfg(&[(var, value)]).unwrap_err();
            assert_eq!(e.variable, var);
        }
        // Read only where it is used: with continuous profiling off, any value is left alone.
        assert!(cfg(&[("OBS_PROFILING", "false"), ("PYROSCOPE_SERVER_ADDRESS", "https://x")]).is_ok());
        if !cfg!(feature = "pyroscope") {
            // Unusable without the feature, so unchecked (`init` warns that it is unused).
            let unused = cfg(&[("PYROSCOPE_SERVER_ADDRESS", "https://x"), ("PYROSCOPE_BASIC_AUTH_USER", "u")]);
            assert_eq!(unused.unwrap().profiling.pyroscope.as_deref(), Some("https://x"));
            return;
        }
        let on = cfg(&[("PYROSCOPE_SERVER_ADDRESS", "HTTP://pyroscope:4040/")]).unwrap();
        assert_eq!(on.profiling.pyroscope.as_deref(), Some("http://pyroscope:4040"));
        let e = cfg(&[("PYROSCOPE_SERVER_ADDRESS", "https://pyroscope.example.org")]).unwrap_err();
        assert_eq!(e.variable, "PYROSCOPE_SERVER_ADDRESS");
        assert!(e.to_string().contains("http://"), "{e}");
        // Tenant and basic auth: read with the address, the password never printed.
        let at = ("PYROSCOPE_SERVER_ADDRESS", "http://pyroscope:4040");
        let auth = cfg(&[
            at,
            ("PYROSCOPE_TENANT_ID", "acme"),
            ("PYROSCOPE_BASIC_AUTH_USER", "pusher"),
            ("PYROSCOPE_BASIC_AUTH_PASSWORD", "hunter2"),
        ])
        .unwrap();
        assert_eq!(auth.profiling.pyroscope_tenant.as_deref(), Some("acme"));
        assert_eq!(auth.profiling.pyroscope_auth, Some(("pusher".into(), Secret("hunter2".into()))));
        assert!(!format!("{auth:?}").contains("hunter2"));
        let e = cfg(&[at, ("PYROSCOPE_BASIC_AUTH_USER", "pusher")]).unwrap_err();
        assert_eq!(e.variable, "PYROSCOPE_BASIC_AUTH_PASSWORD");
        assert_eq!(
            cfg(&[at, ("PYROSCOPE_BASIC_AUTH_PASSWORD", "x")]).unwrap_err().variable,
            "PYROSCOPE_BASIC_AUTH_USER"
        );
        assert_eq!(cfg(&[at, ("PYROSCOPE_TENANT_ID", "a\nb")]).unwrap_err().variable, "PYROSCOPE_TENANT_ID");
        // Another server set in code does not get the environment's credentials.
        let moved = auth.pyroscope(Some("http://other:4040"));
        assert_eq!((moved.profiling.pyroscope_tenant, moved.profiling.pyroscope_auth), (None, None));
        // Without an address they are not read (nothing is pushed).
        assert!(cfg(&[("PYROSCOPE_BASIC_AUTH_USER", "pusher")]).is_ok());
    }

    #[test]
    fn profiles() {
        let dev = cfg(&[]).unwrap();
        assert_eq!((dev.environment, dev.enabled, dev.sampling_ratio()), (Environment::Development, true, 1.0));
        assert!(dev.traces_endpoint.is_none());
        assert_eq!(dev.spans_file.as_deref(), Some(std::path::Path::new("obs-spans.jsonl")));
        let prod = cfg(&[("OBS_ENV", "production")]).unwrap();
        assert_eq!((prod.enabled, prod.sampling_ratio()), (true, 0.1));
        assert_eq!(prod.traces_endpoint.as_deref(), Some("http://localhost:4318/v1/traces"));
        assert_eq!(prod.spans_file, None);
        let test = cfg(&[("OBS_ENV", "test")]).unwrap();
        assert!(!test.enabled);
        assert!(cfg(&[("OBS_ENV", "test"), ("ENABLE_OBSERVABILITY", "true")]).unwrap().enabled);
        assert!(!cfg(&[("ENABLE_OBSERVABILITY", "0")]).unwrap().enabled);
        let ratio = cfg(&[("OBS_ENV", "staging"), ("OTEL_TRACES_SAMPLER_ARG", "0.25")]).unwrap();
        assert_eq!(ratio.sampling_ratio(), 0.25);
        let off = cfg(&[("OTEL_TRACES_SAMPLER", "parentbased_always_off")]).unwrap();
        assert_eq!((off.sampler, off.parent_based), (Sampler::AlwaysOff, true));
        let off = cfg(&[("OTEL_TRACES_SAMPLER", "always_off")]).unwrap();
        assert_eq!((off.sampler, off.parent_based), (Sampler::AlwaysOff, false), "a caller's flag does not decide");
        let ratio = cfg(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.5")]).unwrap();
        assert_eq!((ratio.sampler, ratio.parent_based), (Sampler::Ratio(0.5), false));
        assert!(cfg(&[]).unwrap().parent_based, "OpenTelemetry's default is parent-based");
        let bad = cfg(&[("OTEL_TRACES_SAMPLER", "parentbased_sometimes")]).unwrap_err().to_string();
        assert!(bad.contains("\"parentbased_sometimes\""), "the value as given: {bad}");
    }

    #[test]
    fn otel_variables() {
        let c = cfg(&[
            ("OTEL_SERVICE_NAME", "revel"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://tempo:4318/"),
            ("OTEL_RESOURCE_ATTRIBUTES", "team=tickets, service.version=1.2.3,note=a%2Cb"),
        ])
        .unwrap();
        assert_eq!(c.service_name, "revel");
        assert_eq!(c.traces_endpoint.as_deref(), Some("http://tempo:4318/v1/traces"));
        assert_eq!(c.service_version.as_deref(), Some("1.2.3"));
        assert_eq!(c.resource_attributes[2], ("note".to_owned(), "a,b".to_owned()));
        let t = cfg(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://x:1/custom"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://y:2"),
        ]);
        assert_eq!(t.unwrap().traces_endpoint.as_deref(), Some("http://x:1/custom"));
        assert!(cfg(&[]).unwrap().service_name.starts_with("unknown_service:"));
        // `service.name` in the resource attributes names the service; `OTEL_SERVICE_NAME` wins.
        let attrs = ("OTEL_RESOURCE_ATTRIBUTES", "team=tickets,service.name=tickets-eu");
        assert_eq!(cfg(&[attrs]).unwrap().default_service_name("revel").service_name, "tickets-eu");
        assert_eq!(cfg(&[attrs, ("OTEL_SERVICE_NAME", "revel-eu")]).unwrap().service_name, "revel-eu");
        assert_eq!(cfg(&[]).unwrap().default_service_name("revel").service_name, "revel");
        assert_eq!(cfg(&[attrs]).unwrap().service_name("code").service_name, "code", "the code's own choice wins");
        // Export headers: the signal's own variable wins; values percent-decoded; never printed.
        let h = cfg(&[
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-ignored=1"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "X-Scope-OrgID=acme, authorization=Basic%20c2VjcmV0,x-scope-orgid=beta",
            ),
        ])
        .unwrap();
        let headers: Vec<(&str, &str)> = h.otlp_headers.iter().map(|(k, v)| (k.as_str(), v.0.as_str())).collect();
        assert_eq!(headers, [("authorization", "Basic c2VjcmV0"), ("x-scope-orgid", "beta")]);
        let printed = format!("{h:?}");
        assert!(!printed.contains("c2VjcmV0") && printed.contains("[REDACTED]"), "{printed}");
        let built = cfg(&[]).unwrap().otlp_header("X-Scope-OrgID", "a").otlp_header("x-scope-orgid", "b");
        assert_eq!(built.otlp_headers, [("x-scope-orgid".to_owned(), Secret("b".into()))]);
    }

    #[test]
    fn invalid_values_name_the_variable_and_the_accepted_form() {
        let e = |vars: &[(&str, &str)]| cfg(vars).unwrap_err().to_string();
        assert_eq!(
            e(&[("OBS_ENV", "prd")]),
            "OBS_ENV=\"prd\" is invalid: expected `development`, `staging`, `production` or `test`"
        );
        assert_eq!(
            e(&[("OBS_ENV", "prod")]),
            "OBS_ENV=\"prod\" is invalid: expected `production` (written in full), or `development`, `staging`, `test`"
        );
        assert!(e(&[("OBS_ENV", "dev")]).contains("expected `development` (written in full)"));
        assert_eq!(
            e(&[("ENABLE_OBSERVABILITY", "maybe")]),
            "ENABLE_OBSERVABILITY=\"maybe\" is invalid: expected `true` or `false`"
        );
        assert_eq!(
            e(&[("OTEL_TRACES_SAMPLER_ARG", "1.5")]),
            "OTEL_TRACES_SAMPLER_ARG=\"1.5\" is invalid: expected a number from 0 to 1, e.g. 0.1"
        );
        assert!(e(&[("OTEL_TRACES_SAMPLER", "sometimes")]).starts_with("OTEL_TRACES_SAMPLER=\"sometimes\" is invalid"));
        assert!(
            e(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "tempo:4318")])
                .starts_with("OTEL_EXPORTER_OTLP_ENDPOINT=\"tempo:4318\" is invalid: expected an http")
        );
        assert!(
            e(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://tempo.example.org/v1/traces")])
                .contains("expected an http:// URL: obs exports without TLS")
        );
        // A malformed header list names the variable, not the value (it may hold credentials).
        for bad in ["authorization", "bad header=x", "x-a=line%0Abreak", "=v"] {
            let err = e(&[("OTEL_EXPORTER_OTLP_HEADERS", bad)]);
            assert!(err.starts_with("OTEL_EXPORTER_OTLP_HEADERS=\"(not shown"), "{bad}: {err}");
            assert!(err.contains("comma-separated `name=value` header pairs"), "{err}");
        }
        assert_eq!(
            e(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
            if cfg!(feature = "grpc") {
                "OTEL_EXPORTER_OTLP_PROTOCOL=\"http/json\" is invalid: expected `http/protobuf` or `grpc`"
            } else {
                "OTEL_EXPORTER_OTLP_PROTOCOL=\"http/json\" is invalid: expected `http/protobuf` (`grpc` needs the \
                 `grpc` feature of obs-runtime)"
            }
        );
        #[cfg(not(feature = "grpc"))]
        assert!(e(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).contains("needs the `grpc` feature"));
        assert!(e(&[("OBS_LOG_FORMAT", "xml")]) == "OBS_LOG_FORMAT=\"xml\" is invalid: expected `json` or `pretty`");
        assert!(e(&[("RUST_LOG", "info,=debug=x")]).starts_with("RUST_LOG=\"info,=debug=x\" is invalid: expected"));
        assert!(e(&[("OBS_SCRUB_ADDRESS", "sometimes")]).starts_with("OBS_SCRUB_ADDRESS=\"sometimes\" is invalid"));
        // Rules from code add to the environment's; they cannot undo a redaction it asked for.
        let code = crate::scrub::Rules::default()
            .redact_key("tax_id")
            .keep_key("token_id")
            .keep_key("iban_hint")
            .keep_key("billing_address")
            .redact_address(false);
        let both = cfg(&[("OBS_SCRUB_KEYS", "iban"), ("OBS_SCRUB_ADDRESS", "true")]).unwrap().scrub(code);
        let rules = format!("{:?}", both.scrub);
        for part in ["extra: [\"iban\", \"taxid\"]", "keep: [\"tokenid\"]", "address: true"] {
            assert!(rules.contains(part), "{part} in {rules}");
        }
        assert!(e(&[("OTEL_RESOURCE_ATTRIBUTES", "team")]).starts_with("OTEL_RESOURCE_ATTRIBUTES=\"team\" is invalid"));
        assert!(
            e(&[("OBS_TRACES_KEEP_SLOW_MS", "2s")])
                .starts_with("OBS_TRACES_KEEP_SLOW_MS=\"2s\" is invalid: expected a whole number")
        );
        assert_eq!(cfg(&[("OBS_TRACES_KEEP_SLOW_MS", "0")]).unwrap().keep_slow_traces, None);
    }

    #[test]
    fn the_standard_export_variables_are_honoured_or_refused() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.export_timeout, Duration::from_secs(10), "OTLP's default");
        assert_eq!((c.export_budget, c.queue_capacity, c.batch_size), (Duration::from_secs(30), 4096, 512));
        assert!(c.propagate);
        assert_eq!(c.limits, Limits::default());
        let c = cfg(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")]).unwrap();
        assert_eq!(c.export_timeout, Duration::from_secs(1));
        let c = cfg(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"), ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "250")]).unwrap();
        assert_eq!(c.export_timeout, Duration::from_millis(250), "the signal's variable wins");
        let c = cfg(&[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "50"),
            ("OTEL_BSP_SCHEDULE_DELAY", "5000"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "2000"),
        ])
        .unwrap();
        assert_eq!((c.queue_capacity, c.batch_size), (100, 50));
        assert_eq!((c.schedule_delay, c.export_budget), (Duration::from_secs(5), Duration::from_secs(2)));
        assert_eq!(cfg(&[("OTEL_BSP_MAX_QUEUE_SIZE", "100")]).unwrap().batch_size, 100, "a batch fits the queue");
        let off = cfg(&[("OBS_ENV", "production"), ("OTEL_TRACES_EXPORTER", "none")]).unwrap();
        assert_eq!((off.traces_endpoint, off.spans_file), (None, None));
        let off = cfg(&[("OTEL_SDK_DISABLED", "true"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]).unwrap();
        assert_eq!((off.traces_endpoint, off.spans_file, off.enabled), (None, None, true), "logs and metrics stay");
        let p = |v: &str| cfg(&[("OTEL_PROPAGATORS", v)]).map(|c| (c.propagate, c.baggage)).unwrap();
        assert_eq!(p("none"), (false, false));
        assert_eq!(p("tracecontext, none"), (true, false));
        assert_eq!(p("tracecontext,baggage"), (true, true));
        assert_eq!(p("baggage"), (false, true));
        assert_eq!((c.propagate, c.baggage), (true, true), "OpenTelemetry's default");
        let c = cfg(&[
            ("OTEL_ATTRIBUTE_COUNT_LIMIT", "10"),
            ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "20"),
            ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "64"),
            ("OTEL_SPAN_EVENT_COUNT_LIMIT", "3"),
            ("OTEL_SPAN_LINK_COUNT_LIMIT", "0"),
            ("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "1"),
        ])
        .unwrap();
        assert_eq!(
            (c.limits.attributes, c.limits.value_length, c.limits.events, c.limits.links, c.limits.event_attributes),
            (20, 64, 3, 0, 1),
            "the span's variable wins over the general one"
        );
        for (var, value, expected) in [
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1s", "a number of milliseconds above 0"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0", "a number of milliseconds above 0"),
            ("OTEL_BSP_SCHEDULE_DELAY", "-5", "a number of milliseconds above 0"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "ten", "a number of milliseconds above 0"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0", "a number of spans above 0"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "5000", "at most the queue size"),
            ("OTEL_SDK_DISABLED", "maybe", "`true` or `false`"),
            ("OTEL_TRACES_EXPORTER", "zipkin", "`otlp` or `none`"),
            ("OTEL_TRACES_EXPORTER", "otlp,console", "`otlp` or `none`"),
            ("OTEL_PROPAGATORS", "tracecontext,b3", "`tracecontext`, `baggage`, or `none`"),
            ("OTEL_SPAN_EVENT_COUNT_LIMIT", "many", "a whole number"),
        ] {
            let e = cfg(&[(var, value)]).unwrap_err();
            assert_eq!(e.variable, var);
            assert!(e.to_string().contains(expected), "{var}={value}: {e}");
        }
    }

    #[test]
    #[cfg(feature = "grpc")]
    fn grpc_endpoints_have_no_signal_path() {
        let c = cfg(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://tempo:4317")]);
        let c = c.unwrap();
        assert_eq!((c.protocol, c.traces_endpoint.as_deref()), (Protocol::Grpc, Some("http://tempo:4317")));
        let prod = cfg(&[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"), ("OBS_ENV", "production")]).unwrap();
        assert_eq!(prod.traces_endpoint.as_deref(), Some("http://localhost:4317"));
    }

    #[test]
    fn kubernetes_attributes_come_from_the_downward_api_and_yield_to_given_ones() {
        let config = Config::from_vars(|k| match k {
            "K8S_POD_NAME" => Some("checkout-7d9f".into()),
            "K8S_NAMESPACE_NAME" => Some(" shop ".into()),
            "K8S_NODE_NAME" => Some("node-a".into()),
            "OTEL_RESOURCE_ATTRIBUTES" => Some("k8s.node.name=given,team=tickets".into()),
            _ => None,
        })
        .unwrap();
        let attr = |k: &str| config.resource_attributes.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(attr("k8s.pod.name"), Some("checkout-7d9f"));
        assert_eq!(attr("k8s.namespace.name"), Some("shop"));
        assert_eq!(attr("k8s.node.name"), Some("given"), "OTEL_RESOURCE_ATTRIBUTES wins");
        assert_eq!(config.resource_attributes.iter().filter(|(k, _)| k == "k8s.node.name").count(), 1);
        assert_eq!(attr("k8s.pod.uid"), None);
        assert_eq!(attr("team"), Some("tickets"));
    }

    #[test]
    fn baggage_attributes_are_keys_a_log_line_takes_as_they_are() {
        let cfg = |v: &str| Config::from_vars(|k| (k == "OBS_BAGGAGE_ATTRIBUTES").then(|| v.to_owned()));
        assert_eq!(cfg(" tenant , experiment.id,a-b ").unwrap().baggage_attributes, ["tenant", "experiment.id", "a-b"]);
        let e = cfg("tenant,user email").unwrap_err().to_string();
        assert!(e.contains("OBS_BAGGAGE_ATTRIBUTES") && e.contains("letters, digits"), "{e}");
        assert!(cfg("x\"y").is_err());
        assert!(Config::from_vars(|_| None).unwrap().baggage_attributes.is_empty(), "none by default");
    }
}
