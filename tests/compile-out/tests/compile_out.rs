//! The attributes and `metric!` record when obs-runtime's feature `enabled` is on, and are the
//! identity when it is off (a library's build on its own), their arguments checked either way
//! (the macros' unit tests show the errors survive; this crate compiles only if the checked
//! arguments are right).

use obs_runtime::config::Config;
use obs_runtime::testing::value;
use obs_runtime::{counted, metric, timed, traced_span};

#[traced_span("compile_out.lend")]
#[counted(metric = "lib_loans_total", labels(branch_id = branch, channel = "kiosk"))]
#[timed(metric = "lib_search_duration_seconds", labels(index = "compile_out"))]
fn lend(branch: u32) -> Result<Option<String>, String> {
    Ok(obs_runtime::trace::current_trace_id())
}

#[test]
fn the_attributes_record_only_with_the_feature() {
    let enabled = obs_runtime::__private::ENABLED;
    match std::env::var("OBS_EXPECT_ENABLED").as_deref() {
        Ok("0") => assert!(!enabled, "this build was to have the attributes compiled out"),
        Ok("1") => assert!(enabled, "this build was to have the attributes compiled in"),
        _ => {}
    }
    let config = Config::from_vars(|k| match k {
        "OBS_ENV" => Some("production".to_owned()),
        "OTEL_TRACES_SAMPLER" => Some("always_on".to_owned()),
        "OTEL_TRACES_EXPORTER" => Some("none".to_owned()),
        _ => None,
    })
    .unwrap();
    let _guard = obs_runtime::init(config).unwrap();

    let trace_id = lend(7).unwrap();
    metric!("lib_loans_total", branch_id = 7, channel = "desk").inc();

    let loans = |channel| value("lib_loans_total", &[("branch_id", "7"), ("channel", channel)]);
    let searches = obs_runtime::testing::histogram("lib_search_duration_seconds", &[("index", "compile_out")]);
    if enabled {
        assert!(trace_id.is_some(), "the function ran in its span");
        assert_eq!(loans("kiosk"), Some(1.0));
        assert_eq!(loans("desk"), Some(1.0));
        assert_eq!(searches.map(|h| h.count), Some(1));
    } else {
        assert_eq!(trace_id, None, "no span");
        assert_eq!(loans("kiosk"), None, "#[counted] is the identity");
        assert_eq!(loans("desk"), None, "metric! holds no series");
        assert!(searches.is_none(), "#[timed] is the identity");
    }
}
