//! `cargo run -p obs-gen`: regenerates `deploy/metrics.md` from the Revel catalog
//! (`cargo run -p obs-gen -- <catalog.toml> <out.md>` for another one).

use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args = std::env::args().skip(1);
    let catalog_path = args.next().map(PathBuf::from).unwrap_or_else(|| root.join("examples/revel/metrics.toml"));
    let out = args.next().map(PathBuf::from).unwrap_or_else(|| root.join("deploy/metrics.md"));
    let catalog = match obs_catalog::Catalog::load(&catalog_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("obs-gen: {e}");
            std::process::exit(1);
        }
    };
    let text = obs_gen::metrics_reference(&catalog, "Revel metrics reference", "examples/revel/metrics.toml");
    if let Err(e) = std::fs::write(&out, text) {
        eprintln!("obs-gen: cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
    println!("wrote {}", out.display());
}
