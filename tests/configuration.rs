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

/// The section `## Configuration file`: each key of its table stands for the variable it names.
/// Checked from outside: a file setting only that key to a value the variable refuses must stop
/// `Config` with an error naming that variable and the key.
#[test]
fn every_documented_file_key_sets_its_variable() {
    let dir = std::env::temp_dir().join(format!("obs-config-doc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut checked = 0;
    for row in table("Configuration file") {
        let (key, variable) = (&row[0], &row[1]);
        // Lists (covered by their `_list` rows), the sampler's choice (a mapping: the property
        // test of `config/file.rs` covers it), the sections themselves, the required version,
        // and the `obs` keys (one rule for all, checked below).
        let leaf = key.rsplit('.').next().unwrap();
        if variable.is_empty()
            || ["composite", "attributes", "headers", "sampler"].contains(&leaf)
            || !key.contains('.')
            || key.starts_with("obs.")
        {
            continue;
        }
        let mut refused = None;
        for bad in ["maybe", "ftp://collector", "novalue", "b3"] {
            // JSON is YAML: the key's path as nested objects (`processors[0]` a one-element list).
            let mut value = serde_json::Value::String(bad.into());
            for segment in key.rsplit('.') {
                let (name, list) = match segment.strip_suffix("[0]") {
                    Some(name) => (name, true),
                    None => (segment, false),
                };
                let inner = if list { serde_json::Value::Array(vec![value]) } else { value };
                value = serde_json::json!({ name: inner });
            }
            value["file_format"] = "1.0".into();
            // A processor needs its exporter.
            for (provider, url) in [
                ("tracer_provider", "http://127.0.0.1:4318/v1/traces"),
                ("logger_provider", "http://127.0.0.1:4318/v1/logs"),
            ] {
                let batch = value
                    .get_mut(provider)
                    .and_then(|p| p.get_mut("processors"))
                    .and_then(|p| p.get_mut(0))
                    .and_then(|p| p.get_mut("batch"));
                if let Some(batch) = batch.filter(|b| b.get("exporter").is_none()) {
                    batch["exporter"] = serde_json::json!({ "otlp_http": { "endpoint": url } });
                }
            }
            let path = dir.join("otel.yaml");
            std::fs::write(&path, value.to_string()).unwrap();
            let file = path.display().to_string();
            if let Err(e) = Config::from_vars(|name| (name == "OTEL_CONFIG_FILE").then(|| file.clone()))
                && e.variable == variable.as_str()
            {
                refused = Some(e);
                break;
            }
        }
        let e = refused.unwrap_or_else(|| panic!("no value of `{key}` was refused as {variable}"));
        let named = e.key.as_deref().and_then(|k| k.split_once(": ")).map(|(_, k)| k.to_owned()).unwrap_or_default();
        assert!(!named.is_empty() && key.starts_with(&named), "{key}: the error names {named:?}: {e}");
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} keys checked");
    // `obs.<key>`: every obs variable of the table above, lower-case without `OBS_`.
    for row in table("obs-runtime") {
        let variable = &row[0];
        let governed = variable.starts_with("OBS_")
            || variable.starts_with("PYROSCOPE_")
            || ["ENABLE_OBSERVABILITY", "RUST_LOG"].contains(&variable.as_str());
        if !governed {
            continue;
        }
        let key = variable.strip_prefix("OBS_").unwrap_or(variable).to_ascii_lowercase();
        let path = dir.join("obs.yaml");
        std::fs::write(&path, format!("file_format: \"1.0\"\nobs:\n  {key}: \"\"\n")).unwrap();
        let file = path.display().to_string();
        let result = Config::from_vars(|name| (name == "OTEL_CONFIG_FILE").then(|| file.clone()));
        assert!(result.is_ok(), "obs.{key} ({variable}) is not a key of the file: {:?}", result.err());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
