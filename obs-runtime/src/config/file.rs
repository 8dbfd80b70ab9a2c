//! `OTEL_CONFIG_FILE`: OpenTelemetry's declarative configuration file (`file_format: "1.0"`), for
//! what obs supports, and obs's own settings under the `obs` key.
//!
//! The file is read into the variables `Config::from_vars` reads (each with the key it came
//! from), so a file and the environment it stands for make the same `Config`, checked by the
//! same code; an error names the file's key. As the specification says, the environment is then
//! ignored for every variable the file can express (`OTEL_*`, `OBS_*`, `PYROSCOPE_*`,
//! `ENABLE_OBSERVABILITY`, `RUST_LOG`) except through `${VAR}` substitution; what only the
//! platform knows (the `K8S_*` downward-API variables) is still read from it.
//!
//! What each key stands for is in `docs/configuration.md`, "Configuration file".

use std::collections::BTreeMap;

use serde_norway::Value;

use super::ConfigError;

/// The file's settings as variables: `variable → (value, where it came from)`.
pub(crate) type FileVars = BTreeMap<&'static str, (String, String)>;

/// What `OTEL_CONFIG_FILE` may hold under `obs`: the variable of each key is `OBS_<KEY>`, or the
/// key itself upper-cased for these.
const OBS_KEYS: &[&str] = &[
    "OBS_ENV",
    "ENABLE_OBSERVABILITY",
    "OBS_SPANS_FILE",
    "OBS_TRACES_SAMPLING_RULES",
    "OBS_TRACES_KEEP_ERRORS",
    "OBS_TRACES_KEEP_SLOW_MS",
    "OBS_DB_SLOW_QUERY_MS",
    "OBS_BAGGAGE_ATTRIBUTES",
    "RUST_LOG",
    "OBS_TRACING_SPANS",
    "OBS_LOG_FORMAT",
    "OBS_SCRUB_KEYS",
    "OBS_SCRUB_ADDRESS",
    "OBS_SCRUB_PHONE_NUMBER",
    "OBS_PROFILING",
    "OBS_PROFILING_ENDPOINTS",
    "OBS_PROFILING_TOKEN",
    "OBS_PROFILING_MAX_SECONDS",
    "OBS_PROFILING_HZ",
    "OBS_VIEWER",
    "OBS_VIEWER_TOKEN",
    "OBS_GRAFANA_URL",
    "PYROSCOPE_SERVER_ADDRESS",
    "PYROSCOPE_TENANT_ID",
    "PYROSCOPE_BASIC_AUTH_USER",
    "PYROSCOPE_BASIC_AUTH_PASSWORD",
];

/// Whether the file, when there is one, decides `name` (the environment is not read for it).
pub(crate) fn governs(name: &str) -> bool {
    name.starts_with("OTEL_") || OBS_KEYS.contains(&name)
}

/// Reads the file at `path`, `${VAR}` references taken from `env`.
pub(crate) fn load(path: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<FileVars, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        variable: "OTEL_CONFIG_FILE",
        value: path.to_owned(),
        expected: "a readable file",
        key: Some(format!("{path}: {e}")),
    })?;
    parse(path, &text, env)
}

/// The file's text into variables (`path` names it in errors).
pub(crate) fn parse(path: &str, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<FileVars, ConfigError> {
    let doc: Value = serde_norway::from_str(text).map_err(|e| ConfigError {
        variable: "OTEL_CONFIG_FILE",
        value: e.to_string(),
        expected: "a YAML document",
        key: Some(path.to_owned()),
    })?;
    let mut r = Reader { path, env, vars: BTreeMap::new() };
    r.document(&doc)?;
    Ok(r.vars)
}

struct Reader<'a> {
    path: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    vars: FileVars,
}

/// The keys of a mapping, each with its value; `None` for a null (an omitted block).
type Entries<'v> = Vec<(&'v str, &'v Value)>;

impl Reader<'_> {
    fn error(&self, at: &str, value: impl Into<String>, expected: &'static str) -> ConfigError {
        ConfigError {
            variable: "OTEL_CONFIG_FILE",
            value: value.into(),
            expected,
            key: Some(format!("{}: {at}", self.path)),
        }
    }

    /// The entries of the mapping at `at` (nothing for a null), each key one of `known`.
    fn map<'v>(
        &self,
        at: &str,
        v: &'v Value,
        known: &[&str],
        expected: &'static str,
    ) -> Result<Entries<'v>, ConfigError> {
        let entries = match v {
            Value::Null => return Ok(Vec::new()),
            Value::Mapping(m) => m,
            _ => return Err(self.error(at, render(v), "a mapping")),
        };
        let mut out = Vec::new();
        for (k, value) in entries {
            let Some(k) = k.as_str() else { return Err(self.error(at, render(k), "string keys")) };
            if !known.contains(&k) {
                return Err(self.error(&join(at, k), k, expected));
            }
            out.push((k, value));
        }
        Ok(out)
    }

    /// A scalar, substituted; `None` when null or empty (as an unset variable).
    fn scalar(&self, at: &str, v: &Value) -> Result<Option<String>, ConfigError> {
        let text = match v {
            Value::Null => return Ok(None),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => self.substitute(at, s)?,
            _ => return Err(self.error(at, render(v), "a scalar value")),
        };
        Ok(Some(text).filter(|t| !t.trim().is_empty()))
    }

    /// `${VAR}`, `${env:VAR}` and `${VAR:-default}` replaced from the environment (an unset
    /// variable without a default by nothing), `$$` by `$`; the result is not substituted again.
    fn substitute(&self, at: &str, s: &str) -> Result<String, ConfigError> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
                continue;
            }
            let Some(body) = after.strip_prefix('{') else {
                out.push('$');
                rest = after;
                continue;
            };
            let Some(end) = body.find('}') else {
                return Err(self.error(at, s, "`${VAR}`, `${env:VAR}` or `${VAR:-default}` references, closed by `}`"));
            };
            let reference = &body[..end];
            let reference = reference.strip_prefix("env:").unwrap_or(reference);
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(self.error(
                    at,
                    s,
                    "references to variables named like `OTEL_SERVICE_NAME` (letters, digits, `_`)",
                ));
            }
            match (self.env)(name).filter(|v| !v.is_empty()) {
                Some(v) => out.push_str(&v),
                None => out.push_str(default.unwrap_or("")),
            }
            rest = &body[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn set(&mut self, variable: &'static str, at: &str, value: String) {
        self.vars.insert(variable, (value, format!("{}: {at}", self.path)));
    }

    /// The scalar at `at`, if any, as `variable`.
    fn scalar_to(&mut self, variable: &'static str, at: &str, v: &Value) -> Result<(), ConfigError> {
        if let Some(value) = self.scalar(at, v)? {
            self.set(variable, at, value);
        }
        Ok(())
    }

    /// Keys obs knows but does not support: an error unless empty.
    fn unsupported(&self, at: &str, v: &Value, expected: &'static str) -> Result<(), ConfigError> {
        let empty = match v {
            Value::Null => true,
            Value::Sequence(s) => s.is_empty(),
            Value::Mapping(m) => {
                // Empty when every value in it is (e.g. `tls:` whose files come from unset variables).
                let mut all = true;
                for (k, value) in m {
                    let at = join(at, k.as_str().unwrap_or("?"));
                    if self.unsupported(&at, value, expected).is_err() {
                        all = false;
                    }
                }
                all
            }
            _ => self.scalar(at, v)?.is_none(),
        };
        if empty { Ok(()) } else { Err(self.error(at, render(v), expected)) }
    }

    fn document(&mut self, doc: &Value) -> Result<(), ConfigError> {
        const TOP: &[&str] = &[
            "file_format",
            "disabled",
            "log_level",
            "resource",
            "attribute_limits",
            "propagator",
            "tracer_provider",
            "logger_provider",
            "meter_provider",
            "instrumentation/development",
            "obs",
        ];
        let expected = "a key of the OpenTelemetry configuration that obs reads: file_format, disabled, resource, \
                        attribute_limits, propagator, tracer_provider, logger_provider, or obs";
        let entries = self.map("", doc, TOP, expected)?;
        let version = entries.iter().find(|(k, _)| *k == "file_format").map(|(_, v)| self.scalar("file_format", v));
        match version.transpose()?.flatten() {
            Some(v) if v == "1.0" || v.starts_with("1.0-rc") => {}
            Some(v) => return Err(self.error("file_format", v, "\"1.0\", the version of the schema obs reads")),
            None => return Err(self.error("file_format", "", "\"1.0\" (the key is required)")),
        }
        // Without a tracer provider, no traces (the schema's no-op provider).
        if !entries.iter().any(|(k, _)| *k == "tracer_provider") {
            self.set("OTEL_TRACES_EXPORTER", "tracer_provider", "none".into());
        }
        for (k, v) in entries {
            match k {
                "file_format" => {}
                "disabled" => self.scalar_to("OTEL_SDK_DISABLED", k, v)?,
                "log_level" => self.unsupported(k, v, "nothing: obs's own lines follow RUST_LOG (`obs.rust_log`)")?,
                "resource" => self.resource(v)?,
                "attribute_limits" => self.limits(k, v, &[
                    ("attribute_value_length_limit", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"),
                    ("attribute_count_limit", "OTEL_ATTRIBUTE_COUNT_LIMIT"),
                ])?,
                "propagator" => self.propagator(v)?,
                "tracer_provider" => self.tracer_provider(v)?,
                "logger_provider" => self.logger_provider(v)?,
                "meter_provider" => self.unsupported(
                    k,
                    v,
                    "nothing: obs's metrics are read by Prometheus from /metrics, not pushed (leave meter_provider out)",
                )?,
                "instrumentation/development" => {
                    self.unsupported(k, v, "nothing: obs's instrumentation is configured under `obs`")?
                }
                _ => self.obs(v)?,
            }
        }
        Ok(())
    }

    fn resource(&mut self, v: &Value) -> Result<(), ConfigError> {
        let expected = "attributes, attributes_list (obs detects the rest itself)";
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut listed = None;
        for (k, v) in self.map(
            "resource",
            v,
            &["attributes", "attributes_list", "schema_url", "detection/development"],
            expected,
        )? {
            let at = join("resource", k);
            match k {
                "attributes" => pairs = self.name_values(&at, v, true)?,
                "attributes_list" => listed = self.scalar(&at, v)?,
                "schema_url" => self.unsupported(&at, v, "nothing: obs's resource has no schema URL")?,
                _ => self.unsupported(
                    &at,
                    v,
                    "nothing: obs detects host, process, container and Kubernetes attributes itself",
                )?,
            }
        }
        // `attributes` win over `attributes_list`.
        if let Some(list) = merged(listed, &pairs, |a, b| a == b) {
            self.set("OTEL_RESOURCE_ATTRIBUTES", "resource", list);
        }
        Ok(())
    }

    /// A list of `{name, value}` entries (and `type` for attributes: scalars only).
    fn name_values(&self, at: &str, v: &Value, typed: bool) -> Result<Vec<(String, String)>, ConfigError> {
        let Value::Sequence(items) = v else {
            return match v {
                Value::Null => Ok(Vec::new()),
                _ => Err(self.error(at, render(v), "a list of `name`/`value` entries")),
            };
        };
        let known: &[&str] = if typed { &["name", "value", "type"] } else { &["name", "value"] };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{at}[{i}]");
            let (mut name, mut value) = (None, None);
            for (k, v) in self.map(&at, item, known, "name, value (and type for attributes)")? {
                let at = join(&at, k);
                match k {
                    "name" => name = self.scalar(&at, v)?,
                    "value" => value = self.scalar(&at, v)?,
                    _ => match self.scalar(&at, v)?.as_deref() {
                        None | Some("string" | "bool" | "int" | "double") => {}
                        Some(other) => {
                            return Err(self.error(
                                &at,
                                other,
                                "string, bool, int or double (obs's resource values are single values)",
                            ));
                        }
                    },
                }
            }
            let Some(name) = name else { return Err(self.error(&at, "", "an entry with a `name`")) };
            if let Some(value) = value {
                out.push((name, value));
            }
        }
        Ok(out)
    }

    fn limits(&mut self, at: &str, v: &Value, keys: &[(&str, &'static str)]) -> Result<(), ConfigError> {
        let known: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
        let expected = "the limits obs applies: attribute_value_length_limit, attribute_count_limit, \
                        event_count_limit, link_count_limit, event_attribute_count_limit, link_attribute_count_limit";
        for (k, v) in self.map(at, v, &known, expected)? {
            let variable = keys.iter().find(|(key, _)| *key == k).map(|(_, var)| *var).expect("a known key");
            self.scalar_to(variable, &join(at, k), v)?;
        }
        Ok(())
    }

    fn propagator(&mut self, v: &Value) -> Result<(), ConfigError> {
        let mut names: Vec<String> = Vec::new();
        let mut set = false;
        for (k, v) in self.map("propagator", v, &["composite", "composite_list"], "composite, composite_list")? {
            let at = join("propagator", k);
            if k == "composite_list" {
                if let Some(list) = self.scalar(&at, v)? {
                    names.extend(list.split(',').map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()));
                    set = true;
                }
                continue;
            }
            match v {
                Value::Null => {}
                Value::Sequence(items) => {
                    set = true;
                    for (i, item) in items.iter().enumerate() {
                        let at = format!("{at}[{i}]");
                        let Value::Mapping(m) = item else {
                            return Err(self.error(&at, render(item), "`tracecontext:` or `baggage:`"));
                        };
                        for (name, _) in m {
                            names.push(name.as_str().unwrap_or("?").to_owned());
                        }
                    }
                }
                _ => return Err(self.error(&at, render(v), "a list of propagators")),
            }
        }
        if set {
            names.dedup();
            let value = if names.is_empty() { "none".to_owned() } else { names.join(",") };
            self.set("OTEL_PROPAGATORS", "propagator", value);
        }
        Ok(())
    }

    fn tracer_provider(&mut self, v: &Value) -> Result<(), ConfigError> {
        let expected = "processors, limits, sampler";
        let entries = self.map("tracer_provider", v, &["processors", "limits", "sampler"], expected)?;
        if !entries.iter().any(|(k, _)| *k == "processors") {
            self.set("OTEL_TRACES_EXPORTER", "tracer_provider", "none".into());
        }
        for (k, v) in entries {
            let at = join("tracer_provider", k);
            match k {
                "processors" => self.span_processors(&at, v)?,
                "limits" => self.limits(
                    &at,
                    v,
                    &[
                        ("attribute_value_length_limit", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT"),
                        ("attribute_count_limit", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT"),
                        ("event_count_limit", "OTEL_SPAN_EVENT_COUNT_LIMIT"),
                        ("link_count_limit", "OTEL_SPAN_LINK_COUNT_LIMIT"),
                        ("event_attribute_count_limit", "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT"),
                        ("link_attribute_count_limit", "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT"),
                    ],
                )?,
                _ => self.sampler(&at, v)?,
            }
        }
        Ok(())
    }

    /// The one batch processor obs runs, or none (no traces exported).
    fn span_processors(&mut self, at: &str, v: &Value) -> Result<(), ConfigError> {
        let items = match v {
            Value::Null => &Vec::new(),
            Value::Sequence(items) => items,
            _ => return Err(self.error(at, render(v), "a list of processors")),
        };
        match items.len() {
            0 => {
                self.set("OTEL_TRACES_EXPORTER", at, "none".into());
                return Ok(());
            }
            1 => {}
            _ => {
                return Err(self.error(
                    at,
                    format!("{} processors", items.len()),
                    "one `batch` processor (obs exports to one collector)",
                ));
            }
        }
        let at = format!("{at}[0]");
        for (_, batch) in self.map(&at, &items[0], &["batch"], "batch (obs's exporter is a batching thread)")? {
            self.processor(&join(&at, "batch"), batch, Signal::Traces)?;
        }
        Ok(())
    }

    /// A processor's queue and schedule, as the signal's variables, and its exporter (required);
    /// the exporter's kind: `otlp` or `console`.
    fn processor(&mut self, at: &str, settings: &Value, signal: Signal) -> Result<&'static str, ConfigError> {
        let keys = ["schedule_delay", "export_timeout", "max_queue_size", "max_export_batch_size", "exporter"];
        let variables = match signal {
            Signal::Traces => [
                "OTEL_BSP_SCHEDULE_DELAY",
                "OTEL_BSP_EXPORT_TIMEOUT",
                "OTEL_BSP_MAX_QUEUE_SIZE",
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            ],
            Signal::Logs => [
                "OTEL_BLRP_SCHEDULE_DELAY",
                "OTEL_BLRP_EXPORT_TIMEOUT",
                "OTEL_BLRP_MAX_QUEUE_SIZE",
                "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE",
            ],
        };
        let entries = self.map(
            at,
            settings,
            &keys,
            "schedule_delay, export_timeout, max_queue_size, max_export_batch_size, exporter",
        )?;
        let Some(&(_, exporter)) = entries.iter().find(|(k, _)| *k == "exporter") else {
            return Err(self.error(at, render(settings), "an `exporter` (required)"));
        };
        for (k, v) in entries {
            if let Some(i) = keys[..4].iter().position(|key| *key == k) {
                self.scalar_to(variables[i], &join(at, k), v)?;
            }
        }
        self.exporter(&join(at, "exporter"), exporter, signal)
    }

    fn exporter(&mut self, at: &str, v: &Value, signal: Signal) -> Result<&'static str, ConfigError> {
        let known: &[&str] = match signal {
            Signal::Traces => &["otlp_http", "otlp_grpc"],
            Signal::Logs => &["otlp_http", "otlp_grpc", "console"],
        };
        let expected = match signal {
            Signal::Traces => "otlp_http or otlp_grpc (without a collector, obs writes spans to `obs.spans_file`)",
            Signal::Logs => "otlp_http, otlp_grpc or console",
        };
        let entries = self.map(at, v, known, expected)?;
        if entries.len() != 1 {
            return Err(self.error(at, format!("{} exporters", entries.len()), "exactly one exporter"));
        }
        let (kind, settings) = entries[0];
        let at = join(at, kind);
        if kind == "console" {
            return self.unsupported(&at, settings, "no settings").map(|()| "console");
        }
        let (endpoint, headers, timeout, protocol) = match signal {
            Signal::Traces => (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            ),
            Signal::Logs => (
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
                "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT",
                "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
            ),
        };
        self.set(protocol, &at, if kind == "otlp_grpc" { "grpc" } else { "http/protobuf" }.into());
        let keys = ["endpoint", "headers", "headers_list", "timeout", "compression", "encoding", "tls", "insecure"];
        let mut pairs = Vec::new();
        let mut listed = None;
        for (k, v) in self.map(&at, settings, &keys, "endpoint, headers, headers_list, timeout")? {
            let at = join(&at, k);
            match k {
                "endpoint" => self.scalar_to(endpoint, &at, v)?,
                "timeout" => self.scalar_to(timeout, &at, v)?,
                "headers" => pairs = self.name_values(&at, v, false)?,
                "headers_list" => listed = self.scalar(&at, v)?,
                "compression" => match self.scalar(&at, v)?.as_deref() {
                    None | Some("none") => {}
                    Some(other) => {
                        return Err(self.error(&at, other, "none (obs sends uncompressed, to a local collector)"));
                    }
                },
                "encoding" => match self.scalar(&at, v)?.as_deref() {
                    None | Some("protobuf") => {}
                    Some(other) => return Err(self.error(&at, other, "protobuf")),
                },
                "insecure" => match self.scalar(&at, v)?.as_deref() {
                    None | Some("true") => {}
                    Some(other) => {
                        return Err(self.error(
                            &at,
                            other,
                            "true (obs exports over plain http:// to a local collector)",
                        ));
                    }
                },
                _ => self.unsupported(
                    &at,
                    v,
                    "nothing: obs exports without TLS, to a local collector that forwards over TLS",
                )?,
            }
        }
        // Header names are case-insensitive: an entry wins over the list's header of any case.
        if let Some(list) = merged(listed, &pairs, |a, b| a.eq_ignore_ascii_case(b)) {
            self.set(headers, &at, list);
        }
        Ok("otlp")
    }

    fn sampler(&mut self, at: &str, v: &Value) -> Result<(), ConfigError> {
        let kinds = ["always_on", "always_off", "trace_id_ratio_based", "parent_based"];
        let expected = "always_on, always_off, trace_id_ratio_based or parent_based (obs's rules go under \
                        `obs.traces_sampling_rules`)";
        let entries = self.map(at, v, &kinds, expected)?;
        let Some(&(kind, settings)) = entries.first() else { return Ok(()) };
        if entries.len() > 1 {
            return Err(self.error(at, format!("{} samplers", entries.len()), "one sampler"));
        }
        if kind != "parent_based" {
            let (name, arg) = self.root_sampler(at, v)?;
            let at = join(at, kind);
            if let Some(arg) = arg {
                self.set("OTEL_TRACES_SAMPLER_ARG", &at, arg);
            }
            self.set("OTEL_TRACES_SAMPLER", &at, name);
            return Ok(());
        }
        let at = join(at, kind);
        let keys = [
            "root",
            "remote_parent_sampled",
            "remote_parent_not_sampled",
            "local_parent_sampled",
            "local_parent_not_sampled",
        ];
        // The schema's default root.
        let mut root = "always_on".to_owned();
        for (k, v) in self.map(&at, settings, &keys, "root (a parent's decision is always followed)")? {
            let at = join(&at, k);
            let (name, arg) = self.root_sampler(&at, v)?;
            let default = match k {
                "root" => {
                    if let Some(arg) = arg {
                        self.set("OTEL_TRACES_SAMPLER_ARG", &at, arg);
                    }
                    root = name;
                    continue;
                }
                "remote_parent_sampled" | "local_parent_sampled" => "always_on",
                _ => "always_off",
            };
            if name != default {
                return Err(self.error(&at, name, "the parent's decision: obs always follows a parent's sampled flag"));
            }
        }
        self.set("OTEL_TRACES_SAMPLER", &at, format!("parentbased_{root}"));
        Ok(())
    }

    /// A root sampler (`always_on`, `always_off`, `trace_id_ratio_based`): its name as
    /// `OTEL_TRACES_SAMPLER` says it, and the ratio.
    fn root_sampler(&self, at: &str, v: &Value) -> Result<(String, Option<String>), ConfigError> {
        let entries = self.map(
            at,
            v,
            &["always_on", "always_off", "trace_id_ratio_based"],
            "always_on, always_off or trace_id_ratio_based",
        )?;
        let [(kind, settings)] = entries[..] else { return Err(self.error(at, render(v), "one sampler")) };
        let at = join(at, kind);
        match kind {
            "trace_id_ratio_based" => {
                let mut ratio = "1".to_owned();
                for (_, v) in self.map(&at, settings, &["ratio"], "ratio")? {
                    if let Some(r) = self.scalar(&join(&at, "ratio"), v)? {
                        ratio = r;
                    }
                }
                Ok(("traceidratio".into(), Some(ratio)))
            }
            other => {
                self.unsupported(&at, settings, "no settings")?;
                Ok((other.to_owned(), None))
            }
        }
    }

    fn logger_provider(&mut self, v: &Value) -> Result<(), ConfigError> {
        for (k, v) in self.map("logger_provider", v, &["processors", "limits"], "processors, limits")? {
            let at = join("logger_provider", k);
            if k == "limits" {
                self.unsupported(&at, v, "nothing: a log line's values are capped at 32 KiB, its fields not counted")?;
                continue;
            }
            let items = match v {
                Value::Null => continue,
                Value::Sequence(items) => items,
                _ => return Err(self.error(&at, render(v), "a list of processors")),
            };
            let mut exporters = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let at = format!("{at}[{i}]");
                for (kind, processor) in self.map(&at, item, &["batch", "simple"], "batch or simple")? {
                    exporters.push(self.processor(&join(&at, kind), processor, Signal::Logs)?);
                }
            }
            exporters.dedup();
            let value = if exporters.is_empty() { "none".to_owned() } else { exporters.join(",") };
            self.set("OTEL_LOGS_EXPORTER", &at, value);
        }
        Ok(())
    }

    /// obs's own settings: `obs.<key>` is `OBS_<KEY>` (or `<KEY>` for the variables that are not
    /// obs's own); a list is joined with `,` (with `; ` for the sampling rules).
    fn obs(&mut self, v: &Value) -> Result<(), ConfigError> {
        let known: Vec<String> = OBS_KEYS.iter().map(|var| key_of(var)).collect();
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        let expected = "a key named after an obs variable, lower-case, without `OBS_`: env, spans_file, \
                        traces_sampling_rules, log_format, rust_log, scrub_keys, profiling, pyroscope_server_address, … \
                        (docs/configuration.md lists them)";
        for (k, v) in self.map("obs", v, &known, expected)? {
            let at = join("obs", k);
            let variable = OBS_KEYS.iter().find(|var| key_of(var) == k).copied().expect("a known key");
            let value = match v {
                Value::Sequence(items) => {
                    let mut parts = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        parts.extend(self.scalar(&format!("{at}[{i}]"), item)?);
                    }
                    let separator = if variable == "OBS_TRACES_SAMPLING_RULES" { "; " } else { "," };
                    Some(parts.join(separator)).filter(|p| !p.is_empty())
                }
                _ => self.scalar(&at, v)?,
            };
            if let Some(value) = value {
                self.set(variable, &at, value);
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Signal {
    Traces,
    Logs,
}

/// `obs.<key>` of a variable: `OBS_LOG_FORMAT` → `log_format`, `RUST_LOG` → `rust_log`.
fn key_of(variable: &str) -> String {
    variable.strip_prefix("OBS_").unwrap_or(variable).to_ascii_lowercase()
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() { key.to_owned() } else { format!("{at}.{key}") }
}

/// A value as it reads in the file, for an error.
fn render(v: &Value) -> String {
    serde_norway::to_string(v).map(|s| s.trim_end().to_owned()).unwrap_or_default()
}

/// A `name=value,…` list (a `*_list` key) and `name`/`value` entries as one variable's value:
/// the entries win over the list's members of the same name (compared with `same`).
fn merged(listed: Option<String>, entries: &[(String, String)], same: impl Fn(&str, &str) -> bool) -> Option<String> {
    let mut list: Vec<String> = listed
        .iter()
        .flat_map(|l| l.split(','))
        .filter(|p| {
            let name = p.split('=').next().unwrap_or("").trim();
            !name.is_empty() && !entries.iter().any(|(n, _)| same(n, name))
        })
        .map(|p| p.trim().to_owned())
        .collect();
    list.extend(entries.iter().map(|(n, v)| format!("{n}={}", encode(v))));
    (!list.is_empty()).then(|| list.join(","))
}

/// A value of a `name=value` list (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`):
/// the characters that would end or split it percent-encoded.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            ',' | '%' | '=' | ' ' | '\t' => out.push_str(&format!("%{:02X}", c as u32)),
            c if c.is_control() => {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::config::Config;

    /// The configuration from `text` as the file `OTEL_CONFIG_FILE` names, `env` the environment.
    fn from_text(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let path = std::env::temp_dir().join(format!(
            "obs-config-{}-{}.yaml",
            std::process::id(),
            std::thread::current().name().unwrap_or("t").replace("::", "-")
        ));
        std::fs::write(&path, text).unwrap();
        let file = path.display().to_string();
        let env: HashMap<String, String> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let result = Config::from_vars(|name| match name {
            "OTEL_CONFIG_FILE" => Some(file.clone()),
            _ => env.get(name).cloned(),
        });
        std::fs::remove_file(&path).unwrap();
        result
    }

    fn vars(text: &str, env: &[(&str, &str)]) -> Result<FileVars, ConfigError> {
        let env: HashMap<&str, &str> = env.iter().copied().collect();
        parse("obs.yaml", text, &|n: &str| env.get(n).map(|v| (*v).to_owned()))
    }

    fn var(vars: &FileVars, name: &str) -> Option<String> {
        vars.get(name).map(|(v, _)| v.clone())
    }

    #[test]
    fn environment_references_are_substituted_in_values() {
        let text = r#"
file_format: "1.0"
resource:
  attributes:
    - name: service.name
      value: ${SERVICE}
    - name: team
      value: ${env:TEAM}-$$-${MISSING:-fallback}-${UNSET}-cost $5
    - name: literal
      value: ${NESTED}
"#;
        let v = vars(text, &[("SERVICE", "revel"), ("TEAM", "tickets"), ("NESTED", "${SERVICE}")]).unwrap();
        assert_eq!(
            var(&v, "OTEL_RESOURCE_ATTRIBUTES").unwrap(),
            "service.name=revel,team=tickets-$-fallback--cost%20$5,literal=${SERVICE}",
            "a substituted value is not substituted again"
        );
        for bad in ["${SERVICE", "${1ABC}", "${A-B}"] {
            let e = vars(&format!("file_format: \"1.0\"\nobs:\n  env: {bad}\n"), &[]).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("obs.yaml: obs.env"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_unknown_or_unsupported_key_is_an_error_naming_it() {
        let cases = [
            (
                "file_format: \"1.0\"\ntracer_provider:\n  processors:\n    - batch:\n        exporter:\n          otlp_http:\n            endpointt: http://x\n",
                "obs.yaml: tracer_provider.processors[0].batch.exporter.otlp_http.endpointt",
            ),
            (
                "file_format: \"1.0\"\nlogger_provider:\n  processors:\n    - batch:\n        exporter:\n          zipkin: {}\n",
                "obs.yaml: logger_provider.processors[0].batch.exporter.zipkin",
            ),
            (
                "file_format: \"1.0\"\ntracer_provider:\n  processors:\n    - batch:\n        exporter:\n          otlp_http:\n            compression: gzip\n",
                "obs.yaml: tracer_provider.processors[0].batch.exporter.otlp_http.compression",
            ),
            (
                "file_format: \"1.0\"\ntracer_provider:\n  sampler:\n    parent_based:\n      remote_parent_sampled:\n        always_off:\n",
                "obs.yaml: tracer_provider.sampler.parent_based.remote_parent_sampled",
            ),
            ("file_format: \"1.0\"\nmeter_provider:\n  readers:\n    - pull: {}\n", "obs.yaml: meter_provider"),
            ("file_format: \"1.0\"\nobs:\n  log_formatt: json\n", "obs.yaml: obs.log_formatt"),
            ("file_format: \"2.0\"\n", "obs.yaml: file_format"),
            ("disabled: true\n", "obs.yaml: file_format"),
            ("file_format: \"1.0\"\nresorce: {}\n", "obs.yaml: resorce"),
        ];
        for (text, key) in cases {
            let e = vars(text, &[]).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}");
            assert!(e.to_string().starts_with(key), "{e}");
        }
        // Keys obs does not support are accepted empty (a template's unset variables).
        let template = "file_format: \"1.0\"\nlog_level: ${OTEL_LOG_LEVEL}\ntracer_provider:\n  processors:\n    - batch:\n        exporter:\n          otlp_http:\n            endpoint: http://127.0.0.1:4318/v1/traces\n            tls:\n              certificate_file: ${OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE}\n            compression: ${OTEL_EXPORTER_OTLP_TRACES_COMPRESSION}\n";
        vars(template, &[]).unwrap();
        assert!(vars(template, &[("OTEL_LOG_LEVEL", "debug")]).unwrap_err().to_string().contains("log_level"));
    }

    #[test]
    fn a_bad_value_is_named_by_its_key_and_variable() {
        let text = "file_format: \"1.0\"\ntracer_provider:\n  processors: []\n  sampler:\n    trace_id_ratio_based:\n      ratio: ten\n";
        let e = from_text(text, &[]).unwrap_err();
        assert_eq!(e.variable, "OTEL_TRACES_SAMPLER_ARG");
        assert!(e.key.as_deref().unwrap().ends_with(": tracer_provider.sampler.trace_id_ratio_based"), "{e}");
        assert!(e.to_string().contains("(OTEL_TRACES_SAMPLER_ARG): \"ten\" is invalid"), "{e}");
    }

    #[test]
    fn the_environment_is_ignored_but_for_references_and_the_platforms_variables() {
        let text = "file_format: \"1.0\"\ntracer_provider:\n  processors: []\nobs:\n  env: ${DEPLOY_ENV}\n";
        let env = [("DEPLOY_ENV", "production"), ("OTEL_TRACES_SAMPLER_ARG", "0.5"), ("OBS_LOG_FORMAT", "pretty")];
        let config = from_text(text, &env).unwrap();
        assert_eq!(config.sampling_ratio(), 0.1, "production's default, not the environment's 0.5");
        assert_eq!(config.log_format, crate::config::LogFormat::Json, "OBS_LOG_FORMAT from the environment is ignored");
        let config = from_text(text, &[("K8S_POD_NAME", "revel-7f9c")]).unwrap();
        assert!(
            config.resource_attributes.iter().any(|(k, v)| k == "k8s.pod.name" && v == "revel-7f9c"),
            "the downward API's variables still come from the environment: {:?}",
            config.resource_attributes
        );
    }

    /// One configuration, drawn at random, as the environment and as a file.
    #[derive(Debug, Clone)]
    struct Setting {
        env: Vec<(&'static str, String)>,
        yaml: String,
    }

    fn setting() -> impl Strategy<Value = Setting> {
        let environment = prop::sample::select(vec!["development", "staging", "production", "test"]);
        let sampler = (0u8..5, 0u32..=100);
        let traces = proptest::option::of((1u16..60000, 1u32..30000, proptest::option::of("[a-z]{1,8}"), 1usize..4096));
        let logs = 0u8..4;
        let limits = proptest::option::of((1u32..500, 1u32..5000));
        let propagators = 0u8..4;
        let resource = proptest::collection::vec(("[a-z]{1,6}(\\.[a-z]{1,6})?", "[ -~]{0,12}"), 0..3);
        let obs = (
            proptest::option::of(prop::sample::select(vec!["json", "pretty"])),
            proptest::option::of(0u32..5000),
            any::<bool>(),
        );
        (environment, sampler, traces, logs, limits, propagators, resource, obs).prop_map(
            |(environment, (sampler, ratio), traces, logs, limits, propagators, resource, (format, slow, rules))| {
                let mut env: Vec<(&'static str, String)> = vec![("OBS_ENV", environment.into())];
                let mut y = String::from("file_format: \"1.0\"\n");
                y += &format!("obs:\n  env: {environment}\n");
                if let Some(f) = format {
                    env.push(("OBS_LOG_FORMAT", f.into()));
                    y += &format!("  log_format: {f}\n");
                }
                if let Some(ms) = slow {
                    env.push(("OBS_TRACES_KEEP_SLOW_MS", ms.to_string()));
                    y += &format!("  traces_keep_slow_ms: {ms}\n");
                }
                if rules {
                    env.push(("OBS_TRACES_SAMPLING_RULES", "route=/healthz never; name=report.* 0.01".into()));
                    y += "  traces_sampling_rules:\n    - route=/healthz never\n    - name=report.* 0.01\n";
                }
                // Resource attributes (values with spaces, commas and `=` percent-encoded).
                if !resource.is_empty() {
                    let pairs: Vec<(String, String)> = resource
                        .iter()
                        .enumerate()
                        .map(|(i, (k, v))| (format!("{k}{i}"), v.trim().to_owned()))
                        .filter(|(_, v)| !v.is_empty())
                        .collect();
                    if !pairs.is_empty() {
                        env.push(("OTEL_RESOURCE_ATTRIBUTES", pairs.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect::<Vec<_>>().join(",")));
                        y += "resource:\n  attributes:\n";
                        for (k, v) in &pairs {
                            // A `$` in a file is written `$$` (else it may start a reference).
                            let v = serde_json::to_string(&v.replace('$', "$$")).unwrap();
                            y += &format!("    - name: {k}\n      value: {v}\n");
                        }
                    }
                }
                let names = [None, Some("tracecontext"), Some("baggage"), Some("tracecontext,baggage")][propagators as usize];
                if let Some(list) = names {
                    env.push(("OTEL_PROPAGATORS", list.into()));
                    y += &format!("propagator:\n  composite_list: {list}\n");
                }
                if let Some((count, length)) = limits {
                    env.push(("OTEL_ATTRIBUTE_COUNT_LIMIT", count.to_string()));
                    env.push(("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", length.to_string()));
                    y += &format!("attribute_limits:\n  attribute_count_limit: {count}\n");
                }
                y += "tracer_provider:\n";
                if let Some((_, length)) = limits {
                    y += &format!("  limits:\n    attribute_value_length_limit: {length}\n");
                }
                match traces {
                    None => {
                        env.push(("OTEL_TRACES_EXPORTER", "none".into()));
                        y += "  processors: []\n";
                    }
                    Some((port, timeout, tenant, batch)) => {
                        let url = format!("http://127.0.0.1:{port}/v1/traces");
                        env.push(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url.clone()));
                        env.push(("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", timeout.to_string()));
                        env.push(("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", batch.to_string()));
                        y += &format!(
                            "  processors:\n    - batch:\n        max_export_batch_size: {batch}\n        exporter:\n          otlp_http:\n            endpoint: {url}\n            timeout: {timeout}\n"
                        );
                        if let Some(t) = tenant {
                            env.push(("OTEL_EXPORTER_OTLP_TRACES_HEADERS", format!("x-scope-orgid={t}")));
                            y += &format!("            headers:\n              - name: x-scope-orgid\n                value: {t}\n");
                        }
                    }
                }
                let r = format!("{}", f64::from(ratio) / 100.0);
                let (name, file) = match sampler {
                    0 => ("always_on", "always_on:".to_owned()),
                    1 => ("always_off", "always_off:".to_owned()),
                    2 => ("traceidratio", format!("trace_id_ratio_based:\n      ratio: {r}")),
                    3 => ("parentbased_traceidratio", format!("parent_based:\n      root:\n        trace_id_ratio_based:\n          ratio: {r}")),
                    _ => ("parentbased_always_on", "parent_based:\n      root:\n        always_on:".to_owned()),
                };
                env.push(("OTEL_TRACES_SAMPLER", name.into()));
                if name.ends_with("traceidratio") {
                    env.push(("OTEL_TRACES_SAMPLER_ARG", r));
                }
                y += &format!("  sampler:\n    {file}\n");
                match logs {
                    0 => {}
                    1 => {
                        env.push(("OTEL_LOGS_EXPORTER", "console".into()));
                        y += "logger_provider:\n  processors:\n    - simple:\n        exporter:\n          console:\n";
                    }
                    2 => {
                        env.push(("OTEL_LOGS_EXPORTER", "otlp".into()));
                        env.push(("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://127.0.0.1:4318/v1/logs".into()));
                        env.push(("OTEL_BLRP_SCHEDULE_DELAY", "250".into()));
                        y += "logger_provider:\n  processors:\n    - batch:\n        schedule_delay: 250\n        exporter:\n          otlp_http:\n            endpoint: http://127.0.0.1:4318/v1/logs\n";
                    }
                    _ => {
                        env.push(("OTEL_LOGS_EXPORTER", "none".into()));
                        y += "logger_provider:\n  processors: []\n";
                    }
                }
                Setting { env, yaml: y }
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

        /// The file and the environment it stands for make the same `Config`.
        #[test]
        fn a_file_and_its_environment_make_the_same_config(s in setting()) {
            let env: HashMap<&str, String> = s.env.iter().cloned().collect();
            let from_env = Config::from_vars(|name| env.get(name).cloned()).map(|c| format!("{c:?}"));
            let from_file = vars(&s.yaml, &[]).and_then(|v| {
                let lookup = |name: &str| v.get(name).map(|(value, _)| value.clone());
                Config::from_vars(lookup)
            }).map(|c| format!("{c:?}"));
            prop_assert_eq!(from_env.map_err(|e| e.to_string()), from_file.map_err(|e| e.to_string()), "{}", s.yaml);
            // And the headers, which `Debug` hides, through the variables.
            let v = vars(&s.yaml, &[]).unwrap();
            prop_assert_eq!(env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS").cloned(), var(&v, "OTEL_EXPORTER_OTLP_TRACES_HEADERS"));
        }
    }
}
