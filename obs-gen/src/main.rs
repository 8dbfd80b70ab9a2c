//! Regenerates the metrics reference, the Prometheus rule file and the Grafana dashboards from a
//! metric catalog and its monitoring file. Dashboards no longer declared are removed.
//!
//! ```text
//! cargo run -p obs-gen                                        # Revel: examples/revel/*.toml -> deploy/
//! cargo run -p obs-gen -- <metrics.toml> <monitoring.toml> <deploy-dir>
//! ```

use std::path::{Path, PathBuf};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (root, sources) = match args.as_slice() {
        [] => (PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."), obs_gen::Sources::revel()),
        [catalog, monitoring, out] => (
            PathBuf::from("."),
            obs_gen::Sources {
                catalog: catalog.into(),
                monitoring: monitoring.into(),
                out_dir: out.into(),
                catalog_label: catalog.clone(),
                monitoring_label: monitoring.clone(),
            },
        ),
        _ => fail("usage: obs-gen [<metrics.toml> <monitoring.toml> <deploy-dir>]"),
    };
    let files = obs_gen::generate(&root, &sources).unwrap_or_else(|e| fail(&e));
    let dir = root.join(&sources.out_dir).join("grafana/dashboards");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let ours = files.iter().any(|(p, _)| root.join(p) == path);
            if path.extension().is_some_and(|e| e == "json") && !ours {
                match std::fs::remove_file(&path) {
                    Ok(()) => println!("removed {}", path.display()),
                    Err(e) => fail(&format!("cannot remove {}: {e}", path.display())),
                }
            }
        }
    }
    for (path, text) in files {
        write(&root.join(path), &text);
    }
}

fn write(path: &Path, text: &str) {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return;
    }
    if let Some(parent) = path.parent()
        && let Err(e) = std::fs::create_dir_all(parent)
    {
        fail(&format!("cannot create {}: {e}", parent.display()));
    }
    if let Err(e) = std::fs::write(path, text) {
        fail(&format!("cannot write {}: {e}", path.display()));
    }
    println!("wrote {}", path.display());
}

fn fail(message: &str) -> ! {
    eprintln!("obs-gen: {message}");
    std::process::exit(1);
}
