//! Compile-time-checked instrumentation for `obs`. Use these through `obs_runtime`, which
//! re-exports them and documents them with examples.
//!
//! Every macro checks its metric against the application's catalog (`metrics.toml` next to
//! `Cargo.toml`, or the file `OBS_CATALOG` names, relative to the manifest directory) and expands
//! to a few calls into `obs_runtime::__private`.

mod args;
mod catalog;
mod check;
mod metric;
mod record;
mod scrub;
#[cfg(test)]
mod tests;
mod traced;
mod wrap;

use proc_macro::TokenStream;

/// Whether the attributes and `metric!` record (obs-runtime's default feature `enabled`): without
/// it they check their arguments as ever and expand to the item unchanged, or to a handle that
/// does nothing.
const ENABLED: bool = cfg!(feature = "enabled");

/// Runs a function inside a span exported over OTLP:
/// `#[traced_span("ticket.checkout", fields(tier_id = tier.id, email = %req.email))]`.
///
/// - The name comes first, as a string literal (span names are part of the dashboards' contract).
/// - `fields(arg, key = value, key = ?debug, key = %display)`: attributes, computed on entry and
///   only when the span is sampled. Integers, floats, booleans and strings keep their type.
/// - Errors: a function whose return type is written `…Result<…>` marks its span failed on `Err`,
///   recording the error's `Display` (else its `Debug`, else its type name). `err = false` turns
///   that off; `err` asks for it on a return type not written so (an alias), and requires a
///   `Result` with a `Display` error.
/// - `level = "debug"`: recorded only where the environment allows it (default `info`; development
///   records debug spans, other environments info; a `RUST_LOG` directive at `debug` or `trace`
///   lowers the bar).
/// - `skip(..)`, `skip_all`: accepted for `#[tracing::instrument]` compatibility (arguments are
///   only recorded when listed in `fields`); naming a non-argument is an error.
///
/// A panic ends the span as failed and keeps unwinding. An `async fn`'s span is entered on every
/// poll and ends when the future completes or is dropped.
///
/// On an `impl` block, `#[traced_span("inventory", ..)]` instruments every method with a body as
/// `#[traced_span("inventory.<method>", ..)]` (options but `fields` and `skip`, which name
/// arguments, apply to all). A method keeps a `#[traced_span("..", ..)]` of its own;
/// `#[traced_span(skip)]` opts it out; `const fn`s are left alone. With `#[async_trait]`, either
/// order works.
#[proc_macro_attribute]
pub fn traced_span(args: TokenStream, item: TokenStream) -> TokenStream {
    traced::expand(args.into(), item.into()).into()
}

/// Counts calls of a function into a catalog counter.
///
/// ```text
/// #[counted(metric = "shop_orders_total", labels(region = order.region, status = "placed"))]
/// #[counted(metric = "shop_payments_total", labels(method = "card"), outcome(label = "status"))]
/// #[counted(metric = "shop_failures_total", only = "err")]
/// ```
/// - `labels(name = value, ..)`: every label the catalog declares, each a literal or an
///   expression over the arguments (anything `Display`), computed when the function is entered.
/// - `only = "ok" | "err"`: count only successful / failed calls of a function returning `Result`.
/// - `outcome(label = "status", ok = "success", err = "failure")`: a label whose value is the
///   outcome of the call (`ok`/`err` default to `"success"`/`"failure"`).
/// - `crate = path`: where `obs_runtime` is, for crates that re-export it.
///
/// Without `only`/`outcome` a call is counted when it is entered; with them, when it returns.
/// After `obs_runtime::init` with observability disabled, nothing is recorded and the label
/// expressions are not evaluated (one relaxed atomic load per call).
#[proc_macro_attribute]
pub fn counted(args: TokenStream, item: TokenStream) -> TokenStream {
    record::expand(record::Recorder::Count, args.into(), item.into()).into()
}

/// Observes a function's duration, in seconds, into a catalog histogram declared with
/// `unit = "seconds"`; for an `async fn`, from its first poll to its completion. Takes the same
/// options as [`counted`].
#[proc_macro_attribute]
pub fn timed(args: TokenStream, item: TokenStream) -> TokenStream {
    record::expand(record::Recorder::Time, args.into(), item.into()).into()
}

/// A checked handle to one series of a catalog metric: `metric!("name", label = value, ..)`.
///
/// Its type follows the catalog: a counter offers `inc`/`inc_by`, a gauge
/// `inc`/`dec`/`add`/`sub`/`set`, a histogram `observe`. With observability disabled the handle
/// holds no series (its operations do nothing, its value reads 0) and the label expressions are
/// not evaluated.
#[proc_macro]
pub fn metric(input: TokenStream) -> TokenStream {
    metric::expand(input.into()).into()
}

/// The catalog definition of one metric, checked at compile time and typed by its kind and
/// labels (`obs_runtime::metrics::Def<kind::Counter, (label::method,)>`):
/// `metric_def!("app_requests_total")`. For the integrations that record into metrics the
/// application names (the HTTP layer, the task wrapper, the database, Redis and HTTP client
/// wrappers); each states in its signature the kind and labels it accepts, so a wrong metric is
/// a compile error.
#[proc_macro]
pub fn metric_def(input: TokenStream) -> TokenStream {
    metric::expand_def(input.into()).into()
}

/// Every metric definition of the catalog, as `&'static [obs_runtime::metrics::MetricDef]`, for
/// registering all families at start-up.
#[proc_macro]
pub fn catalog(input: TokenStream) -> TokenStream {
    metric::expand_catalog(input.into()).into()
}

/// Makes a type safe to log: implements `obs_runtime::scrub::Scrub` and a `Debug` that prints the
/// scrubbed form.
///
/// Fields named like sensitive keys (`password`, `card_number`, `cvv`, …) are redacted, kept ids
/// (`user_id`, …) are left as they are, strings are scrubbed as free text (emails, card numbers,
/// tokens), and everything else is scrubbed through its own `Scrub`. Per field:
///
/// - `#[scrub(redact)]`: always `[REDACTED]` (the type needs no `Scrub`);
/// - `#[scrub(keep)]`: as it is, even under a sensitive name;
/// - `#[scrub(text)]`: formatted with `Display`, then scrubbed as free text;
/// - `#[scrub(partial = 4)]`: only the last 4 characters shown (`****1111`);
/// - `#[scrub(skip)]`: left out.
///
/// On the type: `#[scrub(no_debug)]` to keep your own `Debug`; `#[scrub(crate = path)]` where
/// `obs_runtime` is re-exported. Type parameters must be `Scrub` too.
#[proc_macro_derive(Scrub, attributes(scrub))]
pub fn derive_scrub(input: TokenStream) -> TokenStream {
    scrub::expand(input.into()).into()
}
