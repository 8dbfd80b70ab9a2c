//! Compile errors the macros promise, each spanned on the offending token, and signatures that
//! must keep compiling. `TRYBUILD=overwrite cargo test -p obs-tests --test ui` refreshes `.stderr`.

use std::path::Path;

/// trybuild compiles the cases in a directory of its own, so the catalog is named through
/// `OBS_CATALOG` (the documented override) rather than found next to a manifest.
fn with_catalog(catalog: &Path, cases: impl FnOnce(&trybuild::TestCases)) {
    // SAFETY: this is the only test of this binary, so no other thread reads the environment.
    unsafe { std::env::set_var("OBS_CATALOG", catalog) };
    let t = trybuild::TestCases::new();
    cases(&t);
    // Dropping `t` runs the cases, with the variable set above.
}

#[test]
fn ui() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    with_catalog(&dir.join("catalogs/library.toml"), |t| {
        t.compile_fail("ui/counted/fail/*.rs");
        t.compile_fail("ui/timed/fail/*.rs");
        t.compile_fail("ui/metric/fail/*.rs");
        t.compile_fail("ui/traced_span/fail/*.rs");
        t.compile_fail("ui/scrub/fail/*.rs");
        t.pass("ui/pass/*.rs");
    });
    with_catalog(&dir.join("catalogs/malformed.toml"), |t| t.compile_fail("ui/catalog/fail/malformed.rs"));
    with_catalog(&dir.join("catalogs/syntax.toml"), |t| t.compile_fail("ui/catalog/fail/syntax.rs"));
    with_catalog(&dir.join("catalogs/does-not-exist.toml"), |t| t.compile_fail("ui/catalog/fail/missing.rs"));
}
