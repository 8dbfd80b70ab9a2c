//! The runtime of `obs`: what the compile-time-checked instrumentation macros call.
//!
//! Declare metrics in `metrics.toml` next to your `Cargo.toml` (format: the `obs-catalog` crate),
//! then instrument functions:
//!
//! ```
//! use obs_runtime::{counted, metric, timed};
//!
//! #[counted(metric = "shop_orders_total", labels(region = region, status = "placed"))]
//! #[timed(metric = "shop_checkout_duration_seconds")]
//! fn place_order(region: &str) { /* … */ }
//!
//! place_order("eu");
//! metric!("shop_revenue_total", currency = "EUR").inc_by(12.5);
//! print!("{}", obs_runtime::metrics::render());
//! ```
//!
//! A metric name or label the catalog does not declare is a compile error:
//!
//! ```compile_fail
//! #[obs_runtime::counted(metric = "shop_order_total")] // did you mean `shop_orders_total`?
//! fn place_order() {}
//! ```
#![warn(missing_docs)]

pub mod metrics;
pub mod testing;

#[doc(hidden)]
pub mod __private;

pub use obs_macros::{catalog, counted, metric, timed};
