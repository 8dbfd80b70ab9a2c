//! `#[counted]`, `#[timed]` and `metric!` on every kind of function, read back through
//! `obs_runtime::testing`. Tests share one process-wide registry and run in parallel, so each
//! uses its own label values.

use obs_runtime::testing::{histogram, value};
use obs_runtime::{counted, metric, timed};

fn loans(branch: &str, channel: &str) -> f64 {
    value("lib_loans_total", &[("branch_id", branch), ("channel", channel)]).unwrap_or(0.0)
}

fn calls(function: &str) -> f64 {
    value("lib_calls_total", &[("function", function)]).unwrap_or(0.0)
}

#[counted(metric = "lib_loans_total", labels(branch_id = "literal", channel = "desk"))]
fn lend_literal() {}

#[test]
fn literal_labels_count_each_call() {
    for _ in 0..3 {
        lend_literal();
    }
    assert_eq!(loans("literal", "desk"), 3.0);
}

#[counted(metric = "lib_loans_total", labels(branch_id = branch, channel = "kiosk"))]
fn lend_at(branch: u64) -> u64 {
    branch * 2
}

#[test]
fn labels_from_arguments() {
    assert_eq!(lend_at(1001), 2002);
    lend_at(1001);
    lend_at(1002);
    assert_eq!(loans("1001", "kiosk"), 2.0);
    assert_eq!(loans("1002", "kiosk"), 1.0);
}

#[counted(metric = "lib_holds_total", labels(member_id = member, shelf = shelf))]
fn hold(member: u64, shelf: i8) {}

#[counted(metric = "lib_holds_total", labels(member_id = member, shelf = "reading-room"))]
fn hold_reading_room(member: &str) {}

fn holds(member: &str, shelf: &str) -> Option<f64> {
    value("lib_holds_total", &[("member_id", member), ("shelf", shelf)])
}

/// Integer labels are looked up by their raw values after the first call: the same series as
/// their decimal text, every call counted, and past the cap each call counted in the overflow.
#[test]
fn integer_labels_by_raw_value_count_into_their_decimal_series() {
    for _ in 0..3 {
        hold(u64::MAX, -1);
    }
    hold(7, -1);
    assert_eq!(holds("18446744073709551615", "-1"), Some(3.0));
    assert_eq!(holds("7", "-1"), Some(1.0));
    // A string site with the same text counts into the same series.
    hold_reading_room("7");
    hold(7, 0);
    assert_eq!(holds("7", "reading-room"), Some(1.0));
    assert_eq!(holds("7", "0"), Some(1.0));
    // The cap is 4: a fifth combination, asked for three times, is counted three times.
    for _ in 0..3 {
        hold(8, 1);
    }
    assert_eq!(holds("8", "1"), None);
    assert_eq!(holds("__overflow__", "__overflow__"), Some(3.0));
    assert_eq!(value("obs_metric_overflow_total", &[("metric", "lib_holds_total")]), Some(3.0));
    hold(u64::MAX, -1);
    assert_eq!(holds("18446744073709551615", "-1"), Some(4.0));
}

#[counted(metric = "lib_loans_total", labels(branch_id = branch, channel = "raw-only-ok"), only = "ok")]
fn lend_if(branch: u64, ok: bool) -> Result<(), LoanError> {
    if ok { Ok(()) } else { Err(LoanError) }
}

/// A call that is not recorded (`only = "ok"` and it failed) creates no series, with integer
/// labels as with any others.
#[test]
fn unrecorded_calls_create_no_series() {
    let _ = lend_if(41, false);
    assert_eq!(value("lib_loans_total", &[("branch_id", "41"), ("channel", "raw-only-ok")]), None);
    let _ = lend_if(41, true);
    let _ = lend_if(41, false);
    let _ = lend_if(41, true);
    assert_eq!(loans("41", "raw-only-ok"), 2.0);
}

struct Counter {
    seen: std::cell::RefCell<u64>,
}

impl Counter {
    fn bump(&self) -> u64 {
        let mut seen = self.seen.borrow_mut();
        *seen += 1;
        *seen
    }

    /// Label expressions that borrow: each one's borrow ends with it (the second `borrow_mut`
    /// would panic if the first label's `Ref` were still alive).
    #[counted(metric = "lib_loans_total", labels(branch_id = *self.seen.borrow(), channel = self.bump()))]
    fn visit(&self) {}
}

#[test]
fn label_expressions_that_borrow_end_their_borrows() {
    let c = Counter { seen: std::cell::RefCell::new(100) };
    c.visit();
    assert_eq!(loans("100", "101"), 1.0);
}

struct Branch {
    id: u32,
    name: String,
}

#[derive(Debug)]
struct LoanError;

#[counted(metric = "lib_loans_total", labels(branch_id = branch.id, channel = format!("{}-{}", branch.name, n)))]
fn lend_expr(branch: Branch, n: usize) -> String {
    // The body takes ownership of `branch`: label values were computed on entry.
    let Branch { name, .. } = branch;
    name
}

#[test]
fn label_expressions_over_moved_arguments() {
    assert_eq!(lend_expr(Branch { id: 7, name: "north".into() }, 2), "north");
    assert_eq!(loans("7", "north-2"), 1.0);
}

#[counted(
    metric = "lib_returns_total",
    labels(branch_id = "outcome"),
    outcome(label = "status", ok = "on_time", err = "late")
)]
fn give_back(late: bool) -> Result<(), LoanError> {
    if late {
        return Err(LoanError);
    }
    Ok(())
}

#[test]
fn outcome_label_from_result() {
    give_back(false).unwrap();
    give_back(false).unwrap();
    give_back(true).unwrap_err();
    let returns = |s| value("lib_returns_total", &[("branch_id", "outcome"), ("status", s)]);
    assert_eq!(returns("on_time"), Some(2.0));
    assert_eq!(returns("late"), Some(1.0));
}

#[counted(metric = "lib_returns_total", labels(branch_id = branch), outcome(label = "status"))]
fn give_back_dynamic(branch: &str, ok: bool) -> Result<u8, String> {
    let n: u8 = if ok {
        "5".parse().map_err(|e: std::num::ParseIntError| e.to_string())?
    } else {
        "x".parse().map_err(|_| "bad".to_string())?
    };
    Ok(n)
}

#[test]
fn outcome_label_with_argument_labels_and_question_mark() {
    assert_eq!(give_back_dynamic("dyn", true), Ok(5));
    assert!(give_back_dynamic("dyn", false).is_err());
    assert!(give_back_dynamic("dyn", false).is_err());
    let returns = |s| value("lib_returns_total", &[("branch_id", "dyn"), ("status", s)]);
    assert_eq!(returns("success"), Some(1.0));
    assert_eq!(returns("failure"), Some(2.0));
}

#[counted(metric = "lib_calls_total", labels(function = "only_ok"), only = "ok")]
#[counted(metric = "lib_calls_total", labels(function = "only_err"), only = "err")]
#[counted(metric = "lib_calls_total", labels(function = "stacked_all"))]
fn parse_number(s: &str) -> Result<i32, std::num::ParseIntError> {
    let n = s.trim().parse::<i32>()?;
    Ok(n + 1)
}

#[test]
fn only_ok_only_err_and_stacked_attributes() {
    assert_eq!(parse_number(" 41 "), Ok(42));
    assert!(parse_number("x").is_err());
    assert!(parse_number("y").is_err());
    assert_eq!(calls("only_ok"), 1.0);
    assert_eq!(calls("only_err"), 2.0);
    assert_eq!(calls("stacked_all"), 3.0);
}

struct Desk {
    lent: u32,
}

impl Desk {
    #[counted(metric = "lib_calls_total", labels(function = "ref_self"))]
    fn peek(&self) -> u32 {
        self.lent
    }

    #[counted(metric = "lib_calls_total", labels(function = "mut_self"), only = "ok")]
    fn lend(&mut self) -> Result<&mut Self, ()> {
        self.lent += 1;
        Ok(self)
    }

    #[counted(metric = "lib_calls_total", outcome(label = "function", ok = "owned_ok", err = "owned_err"))]
    fn close(self) -> Result<u32, u32> {
        if self.lent > 1 { Ok(self.lent) } else { Err(self.lent) }
    }

    #[counted(metric = "lib_loans_total", labels(branch_id = self.lent, channel = "desk"))]
    fn lend_with_self_label(&self) {}
}

#[test]
fn methods_ref_mut_and_owned_self() {
    let mut d = Desk { lent: 0 };
    d.lend().unwrap().lend().unwrap();
    assert_eq!(d.peek(), 2);
    d.lend_with_self_label();
    assert_eq!(d.close(), Ok(2));
    assert_eq!(Desk { lent: 0 }.close(), Err(0));
    assert_eq!(calls("mut_self"), 2.0);
    assert_eq!(calls("ref_self"), 1.0);
    assert_eq!(calls("owned_ok"), 1.0);
    assert_eq!(calls("owned_err"), 1.0);
    assert_eq!(loans("2", "desk"), 1.0);
}

#[counted(metric = "lib_calls_total", labels(function = std::any::type_name::<T>()))]
fn generic<T: Default + std::fmt::Debug>(x: T) -> String {
    format!("{x:?}")
}

#[counted(metric = "lib_calls_total", labels(function = "impl_trait"))]
fn evens(limit: u32) -> impl Iterator<Item = u32> {
    (0..limit).filter(|n| n % 2 == 0)
}

#[counted(metric = "lib_calls_total", labels(function = "impl_trait_result"), only = "ok")]
fn maybe_display(ok: bool) -> Result<impl std::fmt::Display, std::fmt::Error> {
    if !ok {
        Err(std::fmt::Error)?;
    }
    Ok(42)
}

#[test]
fn generics_and_impl_trait() {
    assert_eq!(generic(5u8), "5");
    assert_eq!(generic("s"), "\"s\"");
    assert_eq!(calls("u8"), 1.0);
    assert_eq!(calls("&str"), 1.0);
    assert_eq!(evens(5).collect::<Vec<_>>(), [0, 2, 4]);
    assert_eq!(calls("impl_trait"), 1.0);
    assert_eq!(maybe_display(true).unwrap().to_string(), "42");
    assert!(maybe_display(false).is_err());
    assert_eq!(calls("impl_trait_result"), 1.0);
}

#[counted(metric = "lib_calls_total", labels(function = "early_return"))]
fn early(n: i32) -> i32 {
    if n < 0 {
        return 0;
    }
    n
}

#[test]
fn early_returns_are_counted() {
    assert_eq!(early(-1), 0);
    assert_eq!(early(3), 3);
    assert_eq!(calls("early_return"), 2.0);
}

/// The same on a method of an `#[async_trait]` impl, which the impl's attribute turns into a
/// function returning `Box::pin(async move { .. })` before these attributes run.
#[async_trait::async_trait]
trait Index {
    async fn search(&self, delay_ms: u64, fail: bool) -> Result<u64, String>;
    async fn scan(&self) -> u32;
}

struct Catalogue;

#[async_trait::async_trait]
impl Index for Catalogue {
    // All three attributes compose, in this order or another.
    #[obs_runtime::traced_span("catalogue.search")]
    #[counted(metric = "lib_calls_total", outcome(label = "function", ok = "trait_ok", err = "trait_err"))]
    #[timed(metric = "lib_search_duration_seconds", labels(index = "async_trait"))]
    async fn search(&self, delay_ms: u64, fail: bool) -> Result<u64, String> {
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        if fail {
            return Err("nope".into());
        }
        Ok(delay_ms)
    }

    // Any output can be timed (no outcome asked).
    #[timed(metric = "lib_search_duration_seconds", labels(index = "async_trait_scan"))]
    async fn scan(&self) -> u32 {
        tokio::task::yield_now().await;
        7
    }
}

#[tokio::test(flavor = "current_thread")]
async fn async_trait_methods_are_timed_to_completion_and_counted_by_outcome() {
    assert_eq!(Catalogue.search(30, false).await, Ok(30));
    assert!(Catalogue.search(0, true).await.is_err());
    let h = histogram("lib_search_duration_seconds", &[("index", "async_trait")]).unwrap();
    assert_eq!(h.count, 2);
    // The future's run, not its creation: the 30 ms sleep is in the sum.
    assert!(h.sum >= 0.030, "sum {}", h.sum);
    assert_eq!(calls("trait_ok"), 1.0);
    assert_eq!(calls("trait_err"), 1.0);
    assert_eq!(Catalogue.scan().await, 7);
    assert_eq!(histogram("lib_search_duration_seconds", &[("index", "async_trait_scan")]).unwrap().count, 1);
}

#[counted(metric = "lib_calls_total", outcome(label = "function", ok = "async_ok", err = "async_err"))]
#[timed(metric = "lib_search_duration_seconds", labels(index = "async"))]
async fn search(delay_ms: u64, fail: bool) -> Result<u64, String> {
    tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
    if fail {
        Err("nope".to_string())?;
    }
    Ok(delay_ms)
}

#[tokio::test(flavor = "current_thread")]
async fn async_fn_is_timed_to_completion_and_counted_by_outcome() {
    assert_eq!(search(30, false).await, Ok(30));
    assert!(search(0, true).await.is_err());
    let h = histogram("lib_search_duration_seconds", &[("index", "async")]).unwrap();
    assert_eq!(h.count, 2);
    // Completion, not first poll: the 30 ms sleep is in the sum, and that call is above the
    // 0.01 s bound (a sleep never returns early; a loaded machine only makes it longer).
    assert!(h.sum >= 0.030, "sum {}", h.sum);
    assert!(h.buckets.iter().find(|b| b.0 == 0.01).unwrap().1 <= 1, "{h:?}");
    assert_eq!(calls("async_ok"), 1.0);
    assert_eq!(calls("async_err"), 1.0);
}

#[timed(metric = "lib_search_duration_seconds", labels(index = idx))]
fn timed_sync(idx: &str, ms: u64) -> &str {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    idx
}

#[test]
fn sync_timing_lands_in_buckets() {
    assert_eq!(timed_sync("sync", 15), "sync");
    timed_sync("sync", 0);
    let h = histogram("lib_search_duration_seconds", &[("index", "sync")]).unwrap();
    assert_eq!(h.count, 2);
    assert!(h.sum >= 0.015);
    assert_eq!(h.buckets.last().unwrap(), &(f64::INFINITY, 2));
    // One call took >= 15 ms: it is above the 0.01 s bound.
    assert!(h.buckets.iter().find(|b| b.0 == 0.01).unwrap().1 <= 1);
}

#[test]
fn metric_handles_follow_the_catalog_kind() {
    let fines = metric!("lib_fines_total", currency = "EUR");
    fines.inc_by(2.5);
    fines.inc_by(0.25);
    fines.inc_by(-1.0); // ignored: counters never decrease
    assert_eq!(value("lib_fines_total", &[("currency", "EUR")]), Some(2.75));

    let before = value("lib_members_active", &[]).unwrap_or(0.0);
    metric!("lib_members_active").inc();
    metric!("lib_members_active").inc();
    metric!("lib_members_active").dec();
    assert_eq!(value("lib_members_active", &[]).unwrap() - before, 1.0);

    let branch = 99;
    metric!("lib_loans_total", channel = "desk", branch_id = branch).inc_by(3);
    assert_eq!(loans("99", "desk"), 3.0);

    for pages in [5.0, 50.0, 500.0, 5000.0] {
        metric!("lib_pages_scanned").observe(pages);
    }
    let h = histogram("lib_pages_scanned", &[]).unwrap();
    assert_eq!(h.buckets, [(10.0, 1), (100.0, 2), (1000.0, 3), (f64::INFINITY, 4)]);
    assert_eq!(h.sum, 5555.0);
}

/// Counts WARN events and keeps their fields, on the thread it is the default for.
#[derive(Default)]
struct Warnings(std::sync::Mutex<Vec<String>>);

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={:?} ", field.name(), value));
            }
        }
        if *event.metadata().level() == tracing::Level::WARN {
            let mut f = Fields(String::new());
            event.record(&mut f);
            self.0.lock().unwrap().push(f.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn series_cap_sends_new_combinations_to_overflow() {
    let warnings = std::sync::Arc::new(Warnings::default());
    tracing::subscriber::with_default(warnings.clone(), || {
        for i in 0..10 {
            metric!("lib_requests_total", path = format!("/flood/{i}")).inc();
        }
    });
    let warnings = warnings.0.lock().unwrap();
    assert_eq!(warnings.len(), 1, "one warning per family, not per overflow: {warnings:?}");
    assert!(
        warnings[0].contains("metric=\"lib_requests_total\"") && warnings[0].contains("series_cap=3"),
        "{warnings:?}"
    );
    assert_eq!(obs_runtime::testing::series_count("lib_requests_total"), 3);
    assert_eq!(value("lib_requests_total", &[("path", "__overflow__")]), Some(7.0));
    assert_eq!(value("obs_metric_overflow_total", &[("metric", "lib_requests_total")]), Some(7.0));
    // Existing series keep counting.
    metric!("lib_requests_total", path = "/flood/0").inc();
    assert_eq!(value("lib_requests_total", &[("path", "/flood/0")]), Some(2.0));
}

/// Cargo rebuilds a crate when a file in its dep-info changes: the catalog must be there, and so
/// must the `OBS_CATALOG` override, or editing `metrics.toml` would leave stale checks.
#[test]
fn the_catalog_is_a_tracked_input_of_the_build() {
    let exe = std::env::current_exe().unwrap();
    let dep_info = exe.with_extension("d");
    let text = std::fs::read_to_string(&dep_info)
        .unwrap_or_else(|e| panic!("cannot read the dep-info {}: {e}", dep_info.display()));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // Named by `[package.metadata.obs] catalog` in the manifest, which is tracked as well.
    let catalog = dir.join("catalogs/library.toml");
    let manifest = dir.join("Cargo.toml");
    assert!(
        text.contains(&format!("{}:", manifest.display())),
        "{} not in {}:\n{text}",
        manifest.display(),
        dep_info.display()
    );
    assert!(
        text.contains(&format!("{}:", catalog.display())),
        "{} not in {}:\n{text}",
        catalog.display(),
        dep_info.display()
    );
    assert!(text.contains("# env-dep:OBS_CATALOG"), "OBS_CATALOG not tracked in {}:\n{text}", dep_info.display());
}

struct Shelf {
    books: u32,
}

impl Shelf {
    #[counted(metric = "lib_loans_total", labels(branch_id = self.books, channel = "async_method"), only = "ok")]
    async fn take(&mut self) -> Result<&mut Self, String> {
        tokio::task::yield_now().await;
        if self.books == 0 {
            return Err("empty".into());
        }
        self.books -= 1;
        Ok(self)
    }
}

#[tokio::test(flavor = "current_thread")]
async fn async_methods_returning_a_reborrow_of_self() {
    let mut shelf = Shelf { books: 2 };
    shelf.take().await.unwrap().take().await.unwrap();
    assert!(shelf.take().await.is_err());
    // Labels are computed on entry: books was 2, then 1; the failed call (0) is not counted.
    assert_eq!(loans("2", "async_method"), 1.0);
    assert_eq!(loans("1", "async_method"), 1.0);
    assert_eq!(loans("0", "async_method"), 0.0);
}

#[counted(metric = "lib_notices_total", labels(r#type = "overdue"))]
fn send_overdue_notice() {}

#[test]
fn labels_named_like_keywords() {
    let before = value("lib_notices_total", &[("type", "reminder")]).unwrap_or(0.0);
    metric!("lib_notices_total", type = "reminder").inc();
    metric!("lib_notices_total", r#type = "reminder").inc();
    assert_eq!(value("lib_notices_total", &[("type", "reminder")]), Some(before + 2.0));
    send_overdue_notice();
    assert_eq!(value("lib_notices_total", &[("type", "overdue")]), Some(1.0));
}

/// Names a label expression binds itself (a `match` arm, `if let`, a block's `let`) are not taken
/// for the function's locals.
#[counted(
    metric = "lib_loans_total",
    labels(
        branch_id = match branch { Some(b) if b > 0 => b, _ => 0 },
        channel = if let Some(c) = kiosk { { let k = c; if k { "kiosk" } else { "desk" } } } else { "none" }
    )
)]
fn lend_matched(branch: Option<u64>, kiosk: Option<bool>) {}

#[test]
fn label_expressions_may_bind_their_own_names() {
    lend_matched(Some(31), Some(true));
    lend_matched(None, None);
    assert_eq!(loans("31", "kiosk"), 1.0);
    assert_eq!(loans("0", "none"), 1.0);
}
