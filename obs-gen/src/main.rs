//! `cargo run -p obs-gen`: regenerates, from `examples/revel/metrics.toml` and
//! `examples/revel/monitoring.toml`, the metrics reference (`deploy/metrics.md`), the Prometheus
//! rule file (`deploy/prometheus/rules/`) and the Grafana dashboards (`deploy/grafana/dashboards/`).
//! Dashboards no longer declared are removed.

use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = match obs_gen::generate(&root) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("obs-gen: {e}");
            std::process::exit(1);
        }
    };
    let dir = root.join(obs_gen::DASHBOARDS_DIR);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let ours = files.iter().any(|(p, _)| root.join(p) == path);
            if path.extension().is_some_and(|e| e == "json") && !ours {
                let _ = std::fs::remove_file(&path);
                println!("removed {}", path.display());
            }
        }
    }
    for (path, text) in files {
        let path = root.join(path);
        if let Some(parent) = path.parent()
            && let Err(e) = std::fs::create_dir_all(parent)
        {
            eprintln!("obs-gen: cannot create {}: {e}", parent.display());
            std::process::exit(1);
        }
        if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
            continue;
        }
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("obs-gen: cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
        println!("wrote {}", path.display());
    }
}
