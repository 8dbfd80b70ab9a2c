//! Signatures that must keep compiling under the attributes.
use obs_runtime::{counted, timed};
use std::fmt::Debug;

trait Store {
    fn get(&self, key: &str) -> Option<&str>;
}

struct Map(Vec<(String, String)>);

impl Store for Map {
    #[counted(metric = "lib_calls_total", labels(function = key))]
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[counted(metric = "lib_calls_total", labels(function = "lifetimes"), only = "ok")]
fn longest<'a, T>(a: &'a [T], b: &'a [T]) -> Result<&'a [T], ()>
where
    T: Debug,
{
    if a.len() >= b.len() { Ok(a) } else { Ok(b) }
}

#[timed(metric = "lib_search_duration_seconds", outcome(label = "index", ok = "boxed_ok", err = "boxed_err"))]
fn boxed(n: u8) -> Result<Box<dyn Iterator<Item = u8>>, String> {
    Ok(Box::new(0..n))
}

#[counted(metric = "lib_calls_total", labels(function = "async_ref"))]
async fn async_ref(s: &str) -> &str {
    s
}

#[counted(metric = "lib_calls_total", labels(function = "async_impl"), only = "err")]
async fn async_impl(n: u32) -> Result<impl Debug, std::num::TryFromIntError> {
    let v: u8 = n.try_into()?;
    Ok(v)
}

#[counted(metric = "lib_calls_total", labels(function = "tuple_pattern"))]
fn pattern((a, b): (u8, u8), Map(v): Map) -> usize {
    (a + b) as usize + v.len()
}

#[counted(metric = "lib_calls_total", labels(function = "never"), only = "ok")]
fn never_ok() -> Result<std::convert::Infallible, String> {
    Err("no".into())
}

struct Desk {
    lent: u32,
}

impl Desk {
    #[counted(metric = "lib_calls_total", labels(function = "async_mut_self"), only = "ok")]
    async fn lend(&mut self) -> Result<&mut Self, ()> {
        self.lent += 1;
        Ok(self)
    }

    #[counted(metric = "lib_loans_total", labels(branch_id = self.lent, channel = channel), only = "ok")]
    #[timed(metric = "lib_search_duration_seconds", labels(index = "method"))]
    async fn lend_checked(&self, channel: impl std::fmt::Display) -> Result<u32, String> {
        let _ = channel.to_string();
        Ok(self.lent)
    }
}

trait Shelf {
    async fn count(&self) -> usize;
}

impl Shelf for Desk {
    #[counted(metric = "lib_calls_total", labels(function = "async_trait_method"))]
    async fn count(&self) -> usize {
        self.lent as usize
    }
}

#[counted(metric = "lib_calls_total", labels(function = x))]
fn impl_arg(x: impl std::fmt::Display) -> String {
    x.to_string()
}

fn main() {
    // The async signatures are run too, not only compiled.
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut d = Desk { lent: 0 };
    rt.block_on(async {
        let _ = d.lend().await;
        let _ = d.lend_checked("desk").await;
        let _ = d.count().await;
        assert_eq!(async_ref("x").await, "x");
        let _ = async_impl(300).await;
    });
    assert_eq!(impl_arg(5), "5");
    let m = Map(vec![("k".into(), "v".into())]);
    assert_eq!(m.get("k"), Some("v"));
    assert_eq!(longest(&[1, 2], &[3]).unwrap(), &[1, 2]);
    assert_eq!(boxed(3).unwrap().count(), 3);
    assert_eq!(pattern((1, 2), Map(vec![])), 3);
    assert!(never_ok().is_err());
}
