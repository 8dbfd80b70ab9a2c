//! What several benchmarks share: the CPU model for each report, the calling thread's CPU clock,
//! each variant measured in wall time and in that thread's CPU time, and the OpenTelemetry SDK's
//! OTLP/HTTP batch pipeline a user would wire by hand (the alternative measured against obs).
#![allow(dead_code)] // each benchmark uses part of it

use std::time::Duration;

use criterion::Criterion;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

#[path = "machine.rs"]
mod machine;
pub use machine::cpu_model;

/// The calling thread's CPU time.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `one` measured as `{group}/{name}` in wall time and as `{group}_cpu/{name}` in the calling
/// thread's CPU time.
pub fn wall_and_cpu(c: &mut Criterion, group: &str, name: &str, one: &mut dyn FnMut()) {
    c.benchmark_group(group).bench_function(name, |b| b.iter(&mut *one));
    c.benchmark_group(format!("{group}_cpu")).bench_function(name, |b| {
        b.iter_custom(|n| {
            let start = thread_cpu();
            for _ in 0..n {
                one();
            }
            thread_cpu() - start
        })
    });
}

/// The OpenTelemetry SDK's batch pipeline exporting over OTLP/HTTP to `url`, with `sampler`.
pub fn sdk_provider(url: &str, sampler: Sampler) -> SdkTracerProvider {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .with_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    SdkTracerProvider::builder().with_batch_exporter(exporter).with_sampler(sampler).build()
}
