//! Compile errors the macros promise, each spanned on the offending token: one test per macro,
//! so a failure names its group and each group's time shows. `TRYBUILD=overwrite cargo test -p
//! obs-ui-tests` refreshes the `.stderr` files.
//!
//! trybuild builds every group in one shared project (`target/tests/trybuild/obs-ui-tests`) and
//! only checks it (there is no `pass` case here), so after the first group the dependencies are
//! already checked and a group costs one `cargo check` of its cases.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The cases compile in a directory of their own, so the catalog is named through `OBS_CATALOG`
/// (the documented override) rather than found next to a manifest. The variable is process-wide:
/// the groups take turns (trybuild would serialize them on its project lock anyway).
static CATALOG: Mutex<()> = Mutex::new(());

fn catalog(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../catalogs").join(name)
}

fn compile_fail(catalog_file: &str, cases: &str) {
    let _turn = CATALOG.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // SAFETY: every test of this binary sets the variable under the lock above, and nothing else
    // in it reads the environment while it is held.
    unsafe { std::env::set_var("OBS_CATALOG", catalog(catalog_file)) };
    let t = trybuild::TestCases::new();
    t.compile_fail(cases);
    // Dropping `t` runs the cases, with the variable set above.
}

#[test]
fn counted() {
    compile_fail("library.toml", "counted/fail/*.rs");
}

#[test]
fn timed() {
    compile_fail("library.toml", "timed/fail/*.rs");
}

#[test]
fn metric() {
    compile_fail("library.toml", "metric/fail/*.rs");
}

#[test]
fn traced_span() {
    compile_fail("library.toml", "traced_span/fail/*.rs");
}

#[test]
fn scrub() {
    compile_fail("library.toml", "scrub/fail/*.rs");
}

#[test]
fn catalog_malformed() {
    compile_fail("malformed.toml", "catalog/fail/malformed.rs");
}

#[test]
fn catalog_syntax() {
    compile_fail("syntax.toml", "catalog/fail/syntax.rs");
}

#[test]
fn catalog_missing() {
    compile_fail("does-not-exist.toml", "catalog/fail/missing.rs");
}
