//! Locating, loading (once per compilation) and tracking the metrics catalog.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use obs_catalog::Catalog;
use proc_macro2::TokenStream;
use quote::quote;

/// The catalog the macros check against, or why there is none.
pub struct Loaded {
    pub path: PathBuf,
    pub catalog: Result<Arc<Catalog>, String>,
}

impl Loaded {
    /// Items that make cargo rebuild the crate when the catalog or its override changes.
    pub fn tracking(&self) -> TokenStream {
        let env = quote!(const _: ::core::option::Option<&str> = ::core::option_env!("OBS_CATALOG"););
        match (&self.catalog, self.path.to_str()) {
            (Ok(_), Some(p)) => quote!(#env const _: &[u8] = ::core::include_bytes!(#p);),
            _ => env,
        }
    }
}

/// Loads `$CARGO_MANIFEST_DIR/metrics.toml`, or `$OBS_CATALOG` (relative to the manifest
/// directory) when set. Parsed once per file version and compiler process.
pub fn load() -> Loaded {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_default();
    let path = match std::env::var_os("OBS_CATALOG") {
        Some(p) if !p.is_empty() => dir.join(p),
        _ => dir.join("metrics.toml"),
    };
    let shown = display_path(&path, &dir);
    type Entry = (Option<SystemTime>, Result<Arc<Catalog>, String>);
    static CACHE: Mutex<Option<HashMap<PathBuf, Entry>>> = Mutex::new(None);
    let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some((t, c)) = cache.get(&path)
        && mtime.is_some()
        && *t == mtime
    {
        return Loaded { path, catalog: c.clone() };
    }
    let catalog = match Catalog::load(&path) {
        Ok(c) => Ok(Arc::new(c)),
        Err(e) if mtime.is_none() => Err(format!(
            "cannot read the metrics catalog `{}`: {}\n\
             help: create `metrics.toml` next to `Cargo.toml`, or point the `OBS_CATALOG` \
             environment variable at it (relative to the crate's manifest directory)",
            shown.display(),
            e.problems.first().map_or("", |p| p.message.trim_start_matches("cannot read the metrics catalog: "))
        )),
        Err(e) => Err(format!("the metrics catalog is invalid:\n{}", e.display_with_path(&shown))),
    };
    cache.insert(path.clone(), (mtime, catalog.clone()));
    Loaded { path, catalog }
}

fn display_path(path: &Path, dir: &Path) -> PathBuf {
    path.strip_prefix(dir).map(Path::to_path_buf).unwrap_or_else(|_| path.to_path_buf())
}
