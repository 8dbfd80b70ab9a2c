//! Locating, loading (once per compilation) and tracking the metrics catalog.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use obs_catalog::Catalog;
use proc_macro2::TokenStream;
use quote::quote;

/// The catalog the macros check against, or why there is none.
pub struct Loaded {
    pub path: PathBuf,
    /// The crate's manifest, tracked too: it may name the catalog.
    pub manifest: Option<PathBuf>,
    pub catalog: Result<Arc<Catalog>, String>,
}

impl Loaded {
    /// The catalog, or its error: `Err(Some(message))` at the first macro use that meets this error
    /// in the compiler process, `Err(None)` at every later one, which then expands to a fallback
    /// that compiles silently. A malformed catalog is one mistake: repeated at every `#[counted]`,
    /// `metric!` and `catalog!()` of a crate, it buried the problem under copies of itself.
    ///
    /// The proc macros of one crate's compilation run in one rustc process, so that is once per
    /// crate, at the use expanded first. A long-lived expander keeps this memory across
    /// compilations: rust-analyzer's proc-macro server may show the error at another use than
    /// `cargo build` does, or only until the file that reported it is expanded again (`cargo
    /// check` and `cargo build` run a process per crate, so they are not affected). Keyed by the
    /// error's text too, so a catalog edited into another mistake is reported again.
    pub fn catalog_or_first_error(&self) -> Result<&Catalog, Option<&str>> {
        static REPORTED: Mutex<BTreeSet<(PathBuf, String)>> = Mutex::new(BTreeSet::new());
        match &self.catalog {
            Ok(c) => Ok(c),
            Err(msg) => {
                let mut reported = REPORTED.lock().unwrap_or_else(|e| e.into_inner());
                let first = reported.insert((self.path.clone(), msg.clone()));
                Err(first.then_some(msg.as_str()))
            }
        }
    }

    /// [`catalog_or_first_error`](Self::catalog_or_first_error) for an expansion that reports
    /// errors as a list: the first meeting of a catalog error is one error at `at`, later ones none.
    pub fn catalog_or_errors(&self, at: proc_macro2::Span) -> Result<&Catalog, Vec<syn::Error>> {
        self.catalog_or_first_error().map_err(|msg| msg.map(|msg| syn::Error::new(at, msg)).into_iter().collect())
    }

    /// Items that make cargo rebuild the crate when the catalog or its override changes, at the
    /// first macro use of each crate's compilation only; empty at the others.
    ///
    /// `include_bytes!` is what makes rustc list the files in the crate's dep-info (proc macros
    /// have no stable way to track a file), and it writes the whole file into the expansion:
    /// once per use, they were half of Revel's expanded source. One copy per crate is enough, as
    /// any item of the crate makes the crate depend on the file. As for
    /// [`catalog_or_first_error`](Self::catalog_or_first_error), the proc macros of one crate's
    /// compilation run in one rustc process; keyed by the crate too, for expanders that live
    /// longer (rust-analyzer's, which tracks nothing for cargo).
    pub fn tracking(&self) -> TokenStream {
        static TRACKED: Mutex<BTreeSet<(String, PathBuf)>> = Mutex::new(BTreeSet::new());
        let krate = format!(
            "{}:{}",
            std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default(),
            std::env::var("CARGO_CRATE_NAME").unwrap_or_default()
        );
        if !TRACKED.lock().unwrap_or_else(|e| e.into_inner()).insert((krate, self.path.clone())) {
            return TokenStream::new();
        }
        let env = quote!(
            const _: ::core::option::Option<&str> = ::core::option_env!("OBS_CATALOG");
        );
        let manifest = match self.manifest.as_ref().and_then(|m| m.to_str()) {
            Some(m) => quote!(
                const _: &[u8] = ::core::include_bytes!(#m);
            ),
            None => quote!(),
        };
        match (&self.catalog, self.path.to_str()) {
            (Ok(_), Some(p)) => quote!(#env #manifest const _: &[u8] = ::core::include_bytes!(#p);),
            _ => quote!(#env #manifest),
        }
    }
}

/// Loads the catalog: the file `OBS_CATALOG` names, else the one `[package.metadata.obs] catalog`
/// names in the crate's `Cargo.toml`, else `metrics.toml`; relative paths start at the crate's
/// manifest directory. Parsed once per file version and compiler process.
pub fn load() -> Loaded {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_default();
    let manifest = dir.join("Cargo.toml");
    let (path, origin) = match std::env::var_os("OBS_CATALOG") {
        Some(p) if !p.is_empty() => (dir.join(p), "the `OBS_CATALOG` environment variable"),
        _ => match metadata_catalog(&manifest) {
            Ok(Some(p)) => (dir.join(p), "`package.metadata.obs.catalog` in `Cargo.toml`"),
            Ok(None) => (dir.join("metrics.toml"), ""),
            Err(msg) => return Loaded { path: dir.join("metrics.toml"), manifest: Some(manifest), catalog: Err(msg) },
        },
    };
    let shown = display_path(&path, &dir);
    type Entry = (Option<SystemTime>, Result<Arc<Catalog>, String>);
    static CACHE: Mutex<Option<HashMap<PathBuf, Entry>>> = Mutex::new(None);
    let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let manifest = manifest.is_file().then_some(manifest);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some((t, c)) = cache.get(&path)
        && mtime.is_some()
        && *t == mtime
    {
        return Loaded { path, manifest, catalog: c.clone() };
    }
    let catalog = match Catalog::load(&path) {
        Ok(c) => Ok(Arc::new(c)),
        Err(e) if mtime.is_none() => {
            let via = if origin.is_empty() { String::new() } else { format!(" (named by {origin})") };
            Err(format!(
                "cannot read the metrics catalog `{}`{via}: {}\n\
                 help: create `metrics.toml` next to `Cargo.toml`, or name the file in `Cargo.toml` \
                 with `[package.metadata.obs] catalog = \"path/to/metrics.toml\"`",
                shown.display(),
                e.problems.first().map_or("", |p| p.message.trim_start_matches("cannot read the metrics catalog: "))
            ))
        }
        Err(e) => Err(format!("the metrics catalog is invalid:\n{}", e.display_with_path(&shown))),
    };
    cache.insert(path.clone(), (mtime, catalog.clone()));
    Loaded { path, manifest, catalog }
}

/// `[package.metadata.obs] catalog = "…"` of the crate's manifest, if any.
fn metadata_catalog(manifest: &Path) -> Result<Option<String>, String> {
    type Entry = (Option<SystemTime>, Result<Option<String>, String>);
    static CACHE: Mutex<Option<HashMap<PathBuf, Entry>>> = Mutex::new(None);
    let mtime = std::fs::metadata(manifest).and_then(|m| m.modified()).ok();
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some((t, v)) = cache.get(manifest)
        && *t == mtime
    {
        return v.clone();
    }
    let value = match std::fs::read_to_string(manifest) {
        // No manifest (e.g. a build system other than cargo): the default applies.
        Err(_) => Ok(None),
        Ok(text) => match text.parse::<toml::Table>() {
            // Cargo reports a malformed manifest itself.
            Err(_) => Ok(None),
            Ok(table) => {
                let value = table
                    .get("package")
                    .and_then(|p| p.get("metadata"))
                    .and_then(|m| m.get("obs"))
                    .and_then(|o| o.get("catalog"));
                match value {
                    None => Ok(None),
                    Some(toml::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                    Some(other) => Err(format!(
                        "`package.metadata.obs.catalog` in `{}` must be a non-empty string, the path of the \
                         metrics catalog relative to `Cargo.toml` (e.g. `catalog = \"../metrics.toml\"`); found {}",
                        manifest.display(),
                        if other.is_str() { "an empty string" } else { other.type_str() },
                    )),
                }
            }
        },
    };
    cache.insert(manifest.to_owned(), (mtime, value.clone()));
    value
}

fn display_path(path: &Path, dir: &Path) -> PathBuf {
    path.strip_prefix(dir).map(Path::to_path_buf).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("obs-macros-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("Cargo.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_catalog_error_is_reported_at_the_first_use_only() {
        let path = std::env::temp_dir().join(format!("obs-macros-test-{}-once.toml", std::process::id()));
        let loaded = |msg: &str| Loaded { path: path.clone(), manifest: None, catalog: Err(msg.to_owned()) };
        let broken = loaded("invalid");
        assert_eq!(broken.catalog_or_first_error().err(), Some(Some("invalid")));
        assert_eq!(broken.catalog_or_first_error().err(), Some(None), "a later use of the same file");
        assert_eq!(loaded("invalid").catalog_or_first_error().err(), Some(None), "another load of it");
        // The file was edited into another mistake: that one is news.
        assert_eq!(loaded("other").catalog_or_first_error().err(), Some(Some("other")));
    }

    #[test]
    fn metadata_names_the_catalog_or_says_what_is_wrong() {
        let ok = manifest("[package]\nname = \"a\"\n[package.metadata.obs]\ncatalog = \"../m.toml\"\n");
        assert_eq!(metadata_catalog(&ok), Ok(Some("../m.toml".into())));
        let none = manifest("[package]\nname = \"a\"\n");
        assert_eq!(metadata_catalog(&none), Ok(None));
        let bad = manifest("[package.metadata.obs]\ncatalog = 3\n");
        let err = metadata_catalog(&bad).unwrap_err();
        assert!(err.contains("`package.metadata.obs.catalog`") && err.ends_with("found integer"), "{err}");
        let empty = manifest("[package.metadata.obs]\ncatalog = \"\"\n");
        assert!(metadata_catalog(&empty).unwrap_err().ends_with("found an empty string"));
        assert_eq!(metadata_catalog(Path::new("/nonexistent/Cargo.toml")), Ok(None));
    }
}
