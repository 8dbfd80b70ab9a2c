//! Codegen tests: what the generators write for a given input, without a compiler (the UI tests
//! in `tests/ui` check the errors as users see them, the integration tests what the code does).

use proc_macro2::TokenStream;
use quote::quote;

use crate::record::Recorder;

/// The catalog of the integration tests; every test of this binary that reads a catalog reads
/// this one, so setting the variable is idempotent.
fn library_catalog() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/catalogs/library.toml");
    // SAFETY: every test of this module sets the same value, and nothing here reads the variable
    // but the catalog loader.
    unsafe { std::env::set_var("OBS_CATALOG", path) };
}

fn text(t: &TokenStream) -> String {
    t.to_string()
}

#[test]
fn a_compiled_out_span_is_the_function_itself() {
    let item = quote!(
        fn checkout(order: u32) -> Result<u32, String> {
            Ok(order)
        }
    );
    let args = quote!("ticket.checkout", fields(order));
    let out = crate::traced::expand_as(false, args.clone(), item.clone());
    // The function, with the span's name in its documentation.
    let documented = quote!(
        #[doc = ""]
        #[doc = "**Traces.** Runs in a span named `ticket.checkout`; in Tempo: `{ name = \"ticket.checkout\" }`."]
        fn checkout(order: u32) -> Result<u32, String> {
            Ok(order)
        }
    );
    assert_eq!(text(&out), text(&documented));
    let on = crate::traced::expand_as(true, args, item);
    assert!(text(&on).contains("span_enabled"), "{on}");
}

#[test]
fn a_compiled_out_span_still_checks_its_arguments() {
    let item = quote!(
        fn checkout(order: u32) {}
    );
    let out = crate::traced::expand_as(false, quote!("", levle = "debug"), item);
    let out = text(&out);
    assert!(out.contains("compile_error"), "{out}");
    assert!(out.contains("span name"), "both problems are reported: {out}");
    assert!(out.contains("levle"), "both problems are reported: {out}");
}

#[test]
fn a_compiled_out_counter_tracks_the_catalog_and_borrows_its_labels_in_a_dead_branch() {
    library_catalog();
    let item = quote!(
        fn lend(branch: u32) {}
    );
    let args = quote!(metric = "lib_loans_total", labels(branch_id = branch, channel = "desk"));
    let out = text(&crate::record::expand_as(false, Recorder::Count, args.clone(), item));
    assert!(!out.contains("__private"), "nothing of the runtime: {out}");
    assert!(out.contains("if false { let _ = & (branch) ; }"), "{out}");
    assert!(!out.contains("compile_error"), "{out}");
    // A misspelt label is still an error.
    let bad = quote!(metric = "lib_loans_total", labels(branch = branch, channel = "desk"));
    let out = text(&crate::record::expand_as(
        false,
        Recorder::Count,
        bad,
        quote!(
            fn lend(branch: u32) {}
        ),
    ));
    assert!(out.contains("compile_error"), "{out}");
}

#[test]
fn a_compiled_out_metric_handle_holds_no_series() {
    library_catalog();
    let out = crate::metric::try_expand(false, quote!("lib_loans_total", branch_id = b, channel = "desk")).unwrap();
    let out = text(&out);
    assert!(out.contains("from_series (None)"), "{out}");
    assert!(out.contains("if false { let _ = & (b) ; let _ = & (\"desk\") ; }"), "{out}");
    let errors = crate::metric::try_expand(false, quote!("lib_loans_total", branch_id = b)).unwrap_err();
    assert!(errors[0].to_string().contains("channel"), "the missing label: {}", errors[0]);
}

#[test]
fn metric_def_is_typed_by_kind_and_labels() {
    library_catalog();
    let out = text(&crate::metric::expand_def(quote!("lib_returns_total")));
    // `branch_id` is not a label any integration fills: a type of its own.
    assert!(out.contains("enum branch_id { }"), "{out}");
    assert!(
        out.contains(
            "checked_def :: < :: obs_runtime :: metrics :: kind :: Counter , (branch_id , :: obs_runtime :: metrics :: label :: status ,) >"
        ),
        "{out}"
    );
}

#[test]
fn the_recorders_document_their_promql() {
    library_catalog();
    let item = quote!(
        /// Gives a book back.
        fn give_back(branch: u32) -> Result<(), String> {
            Ok(())
        }
    );
    let args = quote!(
        metric = "lib_returns_total",
        labels(branch_id = branch),
        outcome(label = "status", ok = "on_time", err = "late")
    );
    let out = text(&crate::record::expand_as(true, Recorder::Count, args, item.clone()));
    for want in [
        "**Metrics.** Calls are counted in `lib_returns_total`. Per second: \
         `sum by (branch_id, status)(rate(lib_returns_total[5m]))`",
        "; failure ratio: `sum(rate(lib_returns_total{status=\\\"late\\\"}[5m])) / sum(rate(lib_returns_total[5m]))`",
    ] {
        assert!(out.contains(want), "{want} in {out}");
    }
    assert!(out.contains("Gives a book back."), "the function's own documentation stays: {out}");
    // The catalog says where Grafana is: each query links to its Explore.
    assert_eq!(out.matches("([Explore](http://localhost:3000/explore?schemaVersion=1&panes=").count(), 2, "{out}");
    let timed = quote!(metric = "lib_search_duration_seconds", labels(index = "title"));
    let out = text(&crate::record::expand_as(
        true,
        Recorder::Time,
        timed,
        quote!(
            fn search() {}
        ),
    ));
    assert!(
        out.contains("histogram_quantile(0.95, sum by (index, le)(rate(lib_search_duration_seconds_bucket[5m])))"),
        "{out}"
    );
}
