//! `docs/configuration.md` and the code in step: every variable `Config` reads is in the table,
//! every variable in the table is read, and the sampling defaults per environment are the
//! table's.

use std::cell::RefCell;
use std::collections::BTreeSet;

use obs_runtime::config::Config;

/// The rows of the table under `## {section}`: each row's cells, the variable's backticks removed.
fn table(section: &str) -> Vec<Vec<String>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md")).unwrap();
    let start = doc.find(&format!("\n## {section}\n")).unwrap_or_else(|| panic!("no section {section}"));
    let body = &doc[start + 1..];
    let body = &body[..body[3..].find("\n## ").map_or(body.len(), |end| end + 3)];
    body.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| l.trim_matches('|').split(" | ").map(|c| c.trim().trim_matches('`').to_owned()).collect())
        .collect()
}

/// The variables `from_vars` asks for, over `scenarios` (some are read only when another is set).
fn read_by_config(scenarios: &[&[(&str, &str)]]) -> BTreeSet<String> {
    let read = RefCell::new(BTreeSet::new());
    for vars in scenarios {
        let _ = Config::from_vars(|name| {
            read.borrow_mut().insert(name.to_owned());
            vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
        })
        .unwrap();
    }
    read.into_inner()
}

#[test]
fn every_variable_read_is_documented_and_every_documented_one_is_read() {
    let documented: BTreeSet<String> = table("obs-runtime").into_iter().map(|row| row[0].clone()).collect();
    let read = read_by_config(&[
        &[],
        &[("OBS_ENV", "production")],
        // Pyroscope's tenant and credentials are read only when there is a server to send to.
        &[("PYROSCOPE_SERVER_ADDRESS", "http://127.0.0.1:4040")],
        // The OTLP log exporter's settings, only when it is on.
        &[("OTEL_LOGS_EXPORTER", "otlp")],
    ]);
    let undocumented: Vec<_> = read.difference(&documented).collect();
    let unread: Vec<_> = documented.difference(&read).collect();
    assert!(undocumented.is_empty(), "read by Config but not in docs/configuration.md: {undocumented:?}");
    assert!(unread.is_empty(), "in docs/configuration.md but never read by Config: {unread:?}");
}

#[test]
fn the_sampling_defaults_per_environment_are_the_tables() {
    let rows = table("obs-runtime");
    let ratio = rows.iter().find(|row| row[0] == "OTEL_TRACES_SAMPLER_ARG").expect("a row for the ratio");
    for (column, environment) in ["development", "staging", "production", "test"].into_iter().enumerate() {
        let config = Config::from_vars(|name| (name == "OBS_ENV").then(|| environment.to_owned())).unwrap();
        let documented: f64 = ratio[column + 1].parse().unwrap();
        assert_eq!(config.sampling_ratio(), documented, "OTEL_TRACES_SAMPLER_ARG's default in {environment}");
    }
}
