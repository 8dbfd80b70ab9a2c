//! Catalog definitions typed by kind and labels, for the integrations that record into metrics
//! the application names (the HTTP layer, the task wrapper, the database, Redis and HTTP client
//! wrappers).
//!
//! [`metric_def!`](crate::metric_def) gives a [`Def`] whose type says what the catalog declares:
//! `metric_def!("app_http_requests_total")` for a counter labelled `method` and `endpoint` is a
//! `Def<kind::Counter, (label::method, label::endpoint)>`. Each integration states what it can
//! record into in its signature, so a metric of the wrong kind, or with a label the integration
//! cannot fill, is a compile error at the call, not a panic at start-up:
//!
//! ```
//! use obs_runtime::{metric_def, task};
//! // A counter labelled `task_name` and `status`, and a histogram labelled `task_name`.
//! task::record_metrics(metric_def!("shop_tasks_total"), metric_def!("shop_task_duration_seconds"));
//! ```
//!
//! ```compile_fail,E0308
//! # use obs_runtime::{metric_def, task};
//! // The counter where the histogram goes.
//! task::record_metrics(metric_def!("shop_tasks_total"), metric_def!("shop_tasks_total"));
//! ```
//!
//! ```compile_fail,E0277
//! # use obs_runtime::{metric_def, task};
//! // `shop_orders_total` is labelled `region`, which the task wrapper does not fill.
//! task::record_metrics(metric_def!("shop_orders_total"), metric_def!("shop_task_duration_seconds"));
//! ```
//!
//! The label markers in [`label`] are the names the integrations fill; a catalog label outside
//! them gets a marker of its own, which no integration fills.

use std::fmt;
use std::marker::PhantomData;

use super::MetricDef;

/// A catalog definition whose kind `K` (one of [`kind`]'s markers) and label names `L` (a tuple
/// of [`label`] markers, in catalog order) are in its type. Made by
/// [`metric_def!`](crate::metric_def); [`get`](Def::get) gives the definition itself.
pub struct Def<K, L> {
    def: &'static MetricDef,
    _types: PhantomData<fn() -> (K, L)>,
}

impl<K, L> Def<K, L> {
    /// For `metric_def!` (through `__private`), which checked `def` against `K` and `L`.
    pub(crate) const fn checked(def: &'static MetricDef) -> Self {
        Def { def, _types: PhantomData }
    }

    /// The catalog's definition.
    pub fn get(self) -> &'static MetricDef {
        self.def
    }
}

impl<K, L> Clone for Def<K, L> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, L> Copy for Def<K, L> {}

impl<K, L> fmt::Debug for Def<K, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Def").field(&self.def.name).finish()
    }
}

/// The kinds of metric, as types.
pub mod kind {
    /// An integer counter.
    #[derive(Debug)]
    pub enum Counter {}
    /// A counter of amounts (`value = "float"`).
    #[derive(Debug)]
    pub enum FloatCounter {}
    /// A value that goes up and down.
    #[derive(Debug)]
    pub enum Gauge {}
    /// A histogram.
    #[derive(Debug)]
    pub enum Histogram {}
}

macro_rules! labels {
    ($($name:ident),* $(,)?) => {
        /// The label names obs's integrations fill, as types (named as in the catalog).
        #[allow(non_camel_case_types)]
        pub mod label {
            $(
                #[doc = concat!("The label `", stringify!($name), "`.")]
                #[derive(Debug)]
                pub enum $name {}
            )*
            /// Every name, in the order above (the macros' vocabulary is checked against it).
            #[cfg(test)]
            pub(crate) const ALL: &[&str] = &[$(stringify!($name)),*];
        }
    };
}

labels!(
    method,
    endpoint,
    status_code,
    server,
    status_class,
    query_type,
    db_system,
    status,
    state,
    command,
    cache,
    result,
    task_name,
    queue_name,
);

/// The integrations that fill labels out of a set, as types (each one's labels in its
/// [`Fills`] implementations).
pub mod by {
    /// The HTTP layer's request counter and duration histogram.
    #[derive(Debug)]
    pub enum HttpServer {}
    /// The HTTP client middleware's duration histogram.
    #[derive(Debug)]
    pub enum HttpClient {}
    /// The database wrapper's query duration histogram.
    #[derive(Debug)]
    pub enum DbQuery {}
    /// The Redis wrapper's command duration histogram.
    #[derive(Debug)]
    pub enum RedisCommand {}
    /// The Redis cache lookup counter.
    #[derive(Debug)]
    pub enum RedisCache {}
    /// The task wrapper's run counter.
    #[derive(Debug)]
    pub enum TaskRuns {}
    /// The task wrapper's duration histogram.
    #[derive(Debug)]
    pub enum TaskDuration {}
}

/// `Self` (one of [`by`]'s integrations) fills the label `L`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot fill the label `{L}` of this metric",
    label = "this metric's labels are not all ones the integration fills",
    note = "the integration's documentation lists the labels it fills; change the catalog's `labels` or pick another metric"
)]
pub trait Fills<L> {}

macro_rules! fills {
    ($by:ident: $($label:ident),*) => {
        $(impl Fills<label::$label> for by::$by {})*
    };
}

fills!(HttpServer: method, endpoint, status_code);
fills!(HttpClient: method, server, status_class);
fills!(DbQuery: query_type, db_system, status);
fills!(RedisCommand: command, status);
fills!(RedisCache: cache, result);
fills!(TaskRuns: task_name, status);
fills!(TaskDuration: task_name);

/// A tuple of label markers that the integration `B` fills, each of them (in any order, any
/// subset).
#[diagnostic::on_unimplemented(
    message = "`{B}` cannot fill the labels `{Self}`",
    note = "a metric given to an obs integration has at most 8 labels, each one the integration fills"
)]
pub trait FilledBy<B> {}

macro_rules! filled_by {
    ($($t:ident),*) => {
        impl<B $(, $t)*> FilledBy<B> for ($($t,)*) where $(B: Fills<$t>),* {}
    };
}

filled_by!();
filled_by!(A);
filled_by!(A, C);
filled_by!(A, C, D);
filled_by!(A, C, D, E);
filled_by!(A, C, D, E, F);
filled_by!(A, C, D, E, F, G);
filled_by!(A, C, D, E, F, G, H);
filled_by!(A, C, D, E, F, G, H, I);

/// The label types of a definition that could not be checked (the catalog has an error,
/// reported by the compiler already): accepted everywhere, so that one mistake is one error.
/// Reachable only through `__private`.
#[derive(Debug)]
pub enum Unchecked {}

impl<B> FilledBy<B> for Unchecked {}

/// The label tuple `Self` is exactly `T` (for the integrations that fill fixed labels, e.g. a
/// pool's connection gauge labelled `state`).
#[diagnostic::on_unimplemented(
    message = "this metric must have exactly the labels `{T}`, not `{Self}`",
    label = "a metric with other labels",
    note = "the integration's documentation gives the labels it needs; change the catalog's `labels` or pick another metric"
)]
pub trait Exactly<T> {}

macro_rules! exactly {
    ($(($($label:ident),*)),* $(,)?) => {
        $(impl Exactly<($(label::$label,)*)> for ($(label::$label,)*) {})*
    };
}

exactly!((), (state), (queue_name));

impl<T> Exactly<T> for Unchecked {}

#[cfg(test)]
mod tests {
    #[test]
    fn the_macros_vocabulary_is_the_markers() {
        assert_eq!(super::label::ALL, obs_catalog::INTEGRATION_LABELS);
    }
}
