//! `OTEL_CONFIG_FILE` as a deployment uses it: `Config::from_env` reads the file the variable
//! names (values substituted from the environment), `init` runs it, and the receiver (decoding
//! with the official `opentelemetry-proto` types) gets the spans with the file's resource and
//! headers, sampled as the file says. One test: `init` sets up the process's single pipeline.

#[path = "support/otlp.rs"]
mod otlp;

use std::time::Duration;

use obs_runtime::config::Config;
use opentelemetry_proto::tonic::common::v1::any_value::Value;

#[obs_runtime::traced_span("config.file.work")]
fn work() {}

#[test]
fn a_configuration_file_drives_the_pipeline() {
    let (receiver, url) = otlp::Receiver::start();
    let dir = std::env::temp_dir().join(format!("obs-config-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("otel.yaml");
    std::fs::write(
        &path,
        r#"
file_format: "1.0"
resource:
  attributes:
    - name: service.name
      value: ${SERVICE_NAME:-unnamed}
    - name: team
      value: tickets, box office
  attributes_list: deployment.region=eu-west-1,team=overridden
propagator:
  composite:
    - tracecontext:
    - baggage:
tracer_provider:
  processors:
    - batch:
        schedule_delay: 50
        exporter:
          otlp_http:
            endpoint: ${COLLECTOR}
            headers:
              - name: x-scope-orgid
                value: acme
  sampler:
    parent_based:
      root:
        always_on:
obs:
  env: production
  log_format: json
  profiling: false
"#,
    )
    .unwrap();
    // The process environment as a deployment has it: the file's path, what it references, and
    // variables the file replaces (ignored).
    let file = path.display().to_string();
    let env = |name: &str| match name {
        "OTEL_CONFIG_FILE" => Some(file.clone()),
        "SERVICE_NAME" => Some("checkout-api".into()),
        "COLLECTOR" => Some(url.clone()),
        "OTEL_TRACES_SAMPLER" => Some("always_off".into()),
        "OTEL_SERVICE_NAME" => Some("from-the-environment".into()),
        _ => None,
    };
    let config = Config::from_vars(env).unwrap();
    assert_eq!(config.sampling_ratio(), 1.0, "the file's always_on, not the environment's always_off");
    let guard = obs_runtime::init(config).unwrap();
    work();
    let spans = receiver.wait_for(1, Duration::from_secs(20));
    assert!(spans.iter().any(|s| s.name == "config.file.work"), "{spans:?}");
    let requests = receiver.requests.lock().unwrap().clone();
    let resource = requests[0].resource_spans[0].resource.as_ref().unwrap();
    let attr = |k: &str| {
        resource.attributes.iter().find(|kv| kv.key == k).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
    };
    assert_eq!(attr("service.name").as_deref(), Some("checkout-api"), "substituted from the environment");
    assert_eq!(attr("team").as_deref(), Some("tickets, box office"), "an entry wins over the list, commas kept");
    assert_eq!(attr("deployment.region").as_deref(), Some("eu-west-1"));
    assert_eq!(attr("deployment.environment").as_deref(), Some("production"), "obs.env");
    assert_eq!(receiver.tenants.lock().unwrap()[0].as_deref(), Some("acme"), "the file's header");
    guard.shutdown();
    std::fs::remove_dir_all(&dir).unwrap();
}
