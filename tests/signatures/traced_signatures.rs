//! Signatures that must keep compiling under `#[traced_span]`, alone and with the metric macros.
use obs_runtime::{counted, timed, traced_span};
use std::fmt::Debug;

trait Store {
    fn get(&self, key: &str) -> Option<&str>;
    fn put(&mut self, key: String, value: String) -> Result<(), String>;
}

struct Map(Vec<(String, String)>);

impl Store for Map {
    #[traced_span("store.get", fields(key), level = "debug")]
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[traced_span("store.put", fields(key, size = value.len()), err)]
    fn put(&mut self, key: String, value: String) -> Result<(), String> {
        if key.is_empty() {
            return Err("empty key".into());
        }
        self.0.push((key, value));
        Ok(())
    }
}

#[traced_span("generic.longest", err)]
fn longest<'a, T>(a: &'a [T], b: &'a [T]) -> Result<&'a [T], String>
where
    T: Debug,
{
    if a.len() >= b.len() { Ok(a) } else { Ok(b) }
}

#[traced_span("async.ref", fields(len = s.len()))]
async fn async_ref(s: &str) -> &str {
    s
}

#[traced_span("async.impl_trait", err)]
async fn async_impl(n: u32) -> Result<impl Debug, std::num::TryFromIntError> {
    let v: u8 = n.try_into()?;
    Ok(v)
}

#[traced_span("sync.impl_trait")]
fn iter(n: u8) -> impl Iterator<Item = u8> {
    0..n
}

#[traced_span("pattern.args", fields(total = a + b))]
fn pattern((a, b): (u8, u8), Map(v): Map) -> usize {
    (a + b) as usize + v.len()
}

#[traced_span("never.ok", err)]
fn never_ok() -> Result<std::convert::Infallible, String> {
    Err("no".into())
}

#[traced_span("debug.field", fields(shape = ?shape), skip(secret))]
fn debug_field(shape: &[u8], secret: &str) -> usize {
    shape.len() + secret.len()
}

#[traced_span("skip.all", skip_all)]
fn skip_all(_a: u8, _b: u8) {}

#[traced_span("early.return")]
fn early(n: u8) -> u8 {
    if n > 3 {
        return 3;
    }
    n
}

#[counted(metric = "lib_calls_total", labels(function = "stacked_outer"))]
#[traced_span("stacked.counted_outer", err)]
#[timed(metric = "lib_search_duration_seconds", labels(index = "stacked"))]
async fn stacked(n: u8) -> Result<u8, String> {
    if n == 0 { Err("zero".into()) } else { Ok(n) }
}

struct Service<T>(T);

impl<T: Clone + Send + Sync + 'static> Service<T> {
    #[traced_span("service.clone_value")]
    async fn value(&self) -> T {
        self.0.clone()
    }

    #[traced_span("service.into_inner")]
    fn into_inner(self) -> T {
        self.0
    }
}

/// A future of a concrete type, boxed and pinned: returned as it is (not the `#[async_trait]`
/// shape, which is declared `Pin<Box<dyn Future>>`).
struct ReadyFuture(u32);

impl std::future::Future for ReadyFuture {
    type Output = u32;
    fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<u32> {
        std::task::Poll::Ready(self.0)
    }
}

#[traced_span("boxed.concrete")]
#[timed(metric = "lib_search_duration_seconds", labels(index = "concrete"))]
fn boxed_concrete() -> std::pin::Pin<Box<ReadyFuture>> {
    Box::pin(ReadyFuture(1))
}

fn main() {
    drop(boxed_concrete());
    let _ = (evens(&[1, 2, 4]).count(), later(), pool(), counter());
    let mut m = Map(Vec::new());
    m.put("a".into(), "b".into()).unwrap();
    let _ = m.get("a");
    let _ = longest(&[1], &[2, 3]);
    let _ = iter(3).count();
    let _ = pattern((1, 2), Map(Vec::new()));
    let _ = never_ok();
    let _ = debug_field(&[1], "x");
    skip_all(1, 2);
    let _ = early(9);
    let _ = (async_ref("x"), async_impl(3), stacked(1), Service(1u8).value());
    let _ = Service(2u8).into_inner();
}

// Written once (not twice) because two copies would differ or must not exist twice:
// an opaque type holding a closure, a static, a thread-local.
#[traced_span("evens")]
fn evens(v: &[u32]) -> impl Iterator<Item = u32> + '_ {
    v.iter().copied().filter(|x| x % 2 == 0)
}

#[traced_span("later")]
fn later() -> impl std::future::Future<Output = u8> {
    async { 1 }
}

#[traced_span("pool")]
fn pool() -> &'static String {
    static POOL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    POOL.get_or_init(|| "connected".to_owned())
}

#[traced_span("counter")]
fn counter() -> u32 {
    thread_local! { static N: std::cell::Cell<u32> = const { std::cell::Cell::new(0) }; }
    N.with(|n| {
        n.set(n.get() + 1);
        n.get()
    })
}
