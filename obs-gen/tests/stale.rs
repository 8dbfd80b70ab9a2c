//! The committed generated files match the catalog: editing `metrics.toml` without running
//! `cargo run -p obs-gen` fails here.

use std::path::Path;

#[test]
fn the_metrics_reference_is_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let catalog = obs_catalog::Catalog::load(&root.join("examples/revel/metrics.toml")).unwrap();
    let expected = obs_gen::metrics_reference(&catalog, "Revel metrics reference", "examples/revel/metrics.toml");
    let committed = std::fs::read_to_string(root.join("deploy/metrics.md")).unwrap_or_default();
    assert!(committed == expected, "deploy/metrics.md is stale: run `cargo run -p obs-gen` and commit the result");
    // Every catalog metric has its section.
    for m in catalog.metrics() {
        assert!(committed.contains(&format!("\n## `{}`\n", m.name)), "{} missing", m.name);
    }
}
