//! Redis telemetry for [redis-rs](https://docs.rs/redis) 1.x async connections, opted into once
//! where the connection is made (feature `redis`).
//!
//! [`Connection::new`] wraps any async connection (`MultiplexedConnection`,
//! `ConnectionManager`, …); commands and pipelines run on it as they did on the connection, and
//! each one, inside a span, becomes:
//!
//! - a `CLIENT` span, a child of the current span, per OpenTelemetry's Redis conventions: named
//!   by the command (`GET`; a pipeline `BATCH GET`, or `BATCH` when its commands differ), with
//!   `db.system.name = "redis"`, `db.operation.name`, `db.namespace` (the database index),
//!   `db.query.text` (the command with every argument replaced by `?`: `SET ? ? ?`),
//!   `db.operation.batch.size` for a pipeline, `server.address`/`server.port`, and on failure
//!   `db.response.status_code` (the error prefix: `WRONGTYPE`) and `error.type`;
//! - an observation of the catalog histogram given to [`RedisMetrics::command_duration`].
//!
//! **Keys and values never leave the process**: not in span names, attributes or error
//! messages (a server error can quote an argument: only its prefix is kept).
//!
//! A command run outside any span (a worker polling its queue) is timed but makes no span: a
//! poll every second would otherwise start a trace every second.
//!
//! [`Connection::cache_get`] is a `GET` that counts a hit or a miss into the counter given to
//! [`RedisMetrics::cache_requests`].
//!
//! ```no_run
//! # async fn example() -> redis::RedisResult<()> {
//! use obs_runtime::redis::{Connection, RedisMetrics};
//! use redis::AsyncCommands as _;
//!
//! let client = redis::Client::open("redis://127.0.0.1/")?;
//! let raw = client.get_multiplexed_async_connection().await?;
//! let mut conn = Connection::new(raw, client.get_connection_info()).metrics(RedisMetrics::new()); // add your catalog's metrics
//!
//! let _: () = conn.set_ex("greeting", "hello", 60).await?; // span `SETEX`, text `SETEX ? ? ?`
//! let cached: Option<String> = conn.cache_get("greetings", "greeting").await?; // a hit
//! # let _ = cached;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use opentelemetry::{StringValue, Value};
use redis::aio::ConnectionLike;
use redis::{Cmd, ConnectionAddr, ConnectionInfo, FromRedisValue, Pipeline, RedisError, RedisFuture, ToRedisArgs};

use crate::metrics::{Def, Family, FilledBy, by, kind};
use crate::trace::{Kind, SpanSite, SpanState};

/// The catalog metrics a [`Connection`] records into; each is optional. Take them from your
/// catalog with [`metric_def!`](crate::metric_def), so that a name the catalog lacks fails to
/// compile, as does a metric of another kind or with a label the wrapper does not fill.
#[derive(Clone, Default)]
pub struct RedisMetrics {
    command: Option<(&'static Family, [Slot; 2])>,
    cache: Option<(&'static Family, [Slot; 2])>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Command,
    Status,
    Cache,
    Result,
    None,
}

impl fmt::Debug for RedisMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |x: Option<(&'static Family, [Slot; 2])>| x.map(|f| f.0.def().name);
        f.debug_struct("RedisMetrics")
            .field("command_duration", &name(self.command))
            .field("cache_requests", &name(self.cache))
            .finish()
    }
}

impl RedisMetrics {
    /// No metrics (spans only).
    pub fn new() -> Self {
        Self::default()
    }

    /// Each command's (or pipeline's) duration in seconds: a histogram labelled by any of
    /// `command` (the command in lower case, `batch` for a pipeline, `other` for a name that is
    /// not a command's) and `status` (`ok`, `error`).
    pub fn command_duration<L: FilledBy<by::RedisCommand>>(mut self, def: Def<kind::Histogram, L>) -> Self {
        let def = def.get();
        let slots = crate::metrics::label_slots(
            def,
            "the Redis wrapper",
            &[("command", Slot::Command), ("status", Slot::Status)],
            Slot::None,
        );
        self.command = Some((crate::metrics::registry().family(def), slots));
        self
    }

    /// Lookups by [`Connection::cache_get`]: a counter labelled by any of `cache` (the name
    /// given to `cache_get`) and `result` (`hit`, `miss`, `error`).
    pub fn cache_requests<L: FilledBy<by::RedisCache>>(mut self, def: Def<kind::Counter, L>) -> Self {
        let def = def.get();
        let slots = crate::metrics::label_slots(
            def,
            "the Redis cache lookup",
            &[("cache", Slot::Cache), ("result", Slot::Result)],
            Slot::None,
        );
        self.cache = Some((crate::metrics::registry().family(def), slots));
        self
    }
}

/// What the spans say about where the server is (computed once, in [`Connection::new`]).
#[derive(Debug, Clone)]
struct Shared {
    namespace: StringValue,
    address: Option<StringValue>,
    port: Option<i64>,
    metrics: RedisMetrics,
}

/// An async Redis connection whose commands are traced and timed; see the
/// [module](self) documentation. Cheap to clone when the connection is (a multiplexed
/// connection or a connection manager).
#[derive(Clone)]
pub struct Connection<C> {
    inner: C,
    shared: Arc<Shared>,
}

impl<C> fmt::Debug for Connection<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("db.namespace", &self.shared.namespace.as_str())
            .field("server.address", &self.shared.address.as_ref().map(|a| a.as_str()))
            .field("server.port", &self.shared.port)
            .finish_non_exhaustive()
    }
}

impl<C: ConnectionLike> Connection<C> {
    /// Wraps `inner`, connected as `info` says (the client's
    /// [`get_connection_info`](redis::Client::get_connection_info)): the server's address, port
    /// and database index go on every span. The password in `info` is not read.
    pub fn new(inner: C, info: &ConnectionInfo) -> Self {
        let (address, port) = match info.addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                (Some(StringValue::from(host.clone())), Some(i64::from(*port)))
            }
            // A Unix socket (and whatever comes next) has no address of the network kind.
            _ => (None, None),
        };
        let namespace = StringValue::from(info.redis_settings().db().to_string());
        Connection { inner, shared: Arc::new(Shared { namespace, address, port, metrics: RedisMetrics::default() }) }
    }

    /// Records into `metrics` from now on (this connection and its clones made afterwards).
    pub fn metrics(mut self, metrics: RedisMetrics) -> Self {
        Arc::make_mut(&mut self.shared).metrics = metrics;
        self
    }

    /// The wrapped connection (commands run on it are not seen).
    pub fn get_ref(&self) -> &C {
        &self.inner
    }

    /// The wrapped connection back.
    pub fn into_inner(self) -> C {
        self.inner
    }

    /// `GET key` as a cache lookup: `Some` is a hit, `None` a miss, each counted with `cache`
    /// into [`RedisMetrics::cache_requests`] (an error counts as `error`). `cache` names the
    /// cache, not the key: a fixed name, it labels a metric.
    pub async fn cache_get<K, V>(&mut self, cache: &'static str, key: K) -> redis::RedisResult<Option<V>>
    where
        K: ToRedisArgs + Send + Sync,
        V: FromRedisValue,
        C: Send,
    {
        let out: redis::RedisResult<Option<V>> = redis::cmd("GET").arg(key).query_async(self).await;
        if let Some((family, slots)) = &self.shared.metrics.cache
            && !crate::is_off()
        {
            let result = match &out {
                Ok(Some(_)) => "hit",
                Ok(None) => "miss",
                Err(_) => "error",
            };
            crate::metrics::series_by_slots(family, slots, |s| match s {
                Slot::Cache => cache,
                Slot::Result => result,
                _ => "",
            })
            .inc();
        }
        out
    }
}

impl<C: ConnectionLike + Send> ConnectionLike for Connection<C> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, redis::Value> {
        let op = Op::start(&self.shared, Described::command(cmd), Some(cmd));
        let fut = self.inner.req_packed_command(cmd);
        Box::pin(async move {
            let mut op = op;
            let out = fut.await;
            op.finish(match &out {
                Ok(v) => server_error(v),
                Err(e) => Some(Failure::of(e)),
            });
            out
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        let op = Op::start(&self.shared, Described::pipeline(pipeline), None);
        let fut = self.inner.req_packed_commands(pipeline, offset, count);
        Box::pin(async move {
            let mut op = op;
            let out = fut.await;
            op.finish(match &out {
                // A command of the batch refused: the first one's prefix.
                Ok(values) => values.iter().find_map(server_error),
                Err(e) => Some(Failure::of(e)),
            });
            out
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// A command as the telemetry names it: never a key or a value.
struct Described {
    /// The span's name and `db.operation.name`: `GET`, `BATCH GET`, `BATCH`, `OTHER`
    /// (interned: a span name is `&'static str`).
    name: &'static str,
    /// The metric's `command` label: `get`, `batch`, `other`.
    label: &'static str,
    batch: Option<usize>,
}

/// The most distinct command names interned; beyond, `OTHER` (commands come from code, so a
/// service uses a few dozen at most).
const NAMES_CAP: usize = 256;

/// The interned upper-case name and lower-case label of a command name, `OTHER`/`other` when it
/// does not look like one (a Redis command is letters, with `.`, `_`, `-` or `|` in module
/// commands: `JSON.GET`).
fn intern(raw: &[u8], batch: bool) -> (&'static str, &'static str) {
    type Names = RwLock<HashMap<Box<[u8]>, (&'static str, &'static str)>>;
    static NAMES: [OnceLock<Names>; 2] = [OnceLock::new(), OnceLock::new()];
    let other = if batch { ("BATCH OTHER", "batch") } else { ("OTHER", "other") };
    let valid = !raw.is_empty()
        && raw.len() <= 32
        && raw.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'|'))
        && raw[0].is_ascii_alphabetic();
    if !valid {
        return other;
    }
    let names = NAMES[batch as usize].get_or_init(Default::default);
    // redis-rs writes command names in upper case: looked up as they are, without a copy.
    if !raw.iter().any(u8::is_ascii_lowercase)
        && let Some(found) = names.read().unwrap_or_else(|e| e.into_inner()).get(raw)
    {
        return *found;
    }
    let upper: Box<[u8]> = raw.to_ascii_uppercase().into_boxed_slice();
    if let Some(found) = names.read().unwrap_or_else(|e| e.into_inner()).get(&upper) {
        return *found;
    }
    let mut names = names.write().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = names.get(&upper) {
        return *found;
    }
    if names.len() >= NAMES_CAP {
        return other;
    }
    let command = String::from_utf8_lossy(&upper).into_owned();
    let (name, label) = if batch {
        (format!("BATCH {command}"), "batch".to_owned())
    } else {
        let label = command.to_ascii_lowercase();
        (command, label)
    };
    let interned: (&'static str, &'static str) = (Box::leak(name.into_boxed_str()), Box::leak(label.into_boxed_str()));
    names.insert(upper, interned);
    interned
}

/// The command's name (its first argument).
fn command_name(cmd: &Cmd) -> Option<&[u8]> {
    match cmd.args_iter().next()? {
        redis::Arg::Simple(name) => Some(name),
        _ => None,
    }
}

/// `GET ? ?`: the name and a `?` per argument.
fn text_of(name: &str, cmd: &Cmd) -> String {
    let mut text = String::with_capacity(name.len() + 2 * cmd.args_iter().len());
    text.push_str(name);
    for _ in cmd.args_iter().skip(1) {
        text.push_str(" ?");
    }
    text
}

impl Described {
    fn command(cmd: &Cmd) -> Described {
        let (name, label) = command_name(cmd).map_or(("OTHER", "other"), |n| intern(n, false));
        Described { name, label, batch: None }
    }

    fn pipeline(pipeline: &Pipeline) -> Described {
        let mut first = None;
        let mut same = true;
        let mut n = 0;
        for cmd in pipeline.cmd_iter() {
            n += 1;
            let name = command_name(cmd).map(|n| n.to_ascii_uppercase());
            match &first {
                None => first = Some(name),
                Some(f) if *f != name => same = false,
                Some(_) => {}
            }
        }
        let name = match first {
            Some(Some(f)) if same => intern(&f, true).0,
            _ => "BATCH",
        };
        Described { name, label: "batch", batch: Some(n) }
    }
}

static COMMAND: SpanSite = SpanSite { name: "redis", level: crate::trace::Level::Info, kind: Kind::Client };

/// One command or pipeline in flight: its span and its start; ended by [`finish`](Op::finish),
/// or as cancelled when its future is dropped first.
struct Op {
    span: Option<SpanState>,
    shared: Arc<Shared>,
    label: &'static str,
    start: Instant,
    done: bool,
}

impl Op {
    /// `cmd`: the command whose text a recorded span gets (built only then).
    fn start(shared: &Arc<Shared>, what: Described, cmd: Option<&Cmd>) -> Op {
        // Outside any span: timed, not traced (see the module documentation).
        let span = (!crate::is_off() && crate::trace::current_ids().is_some()).then(|| {
            let mut span = SpanState::start(&COMMAND);
            span.rename(what.name);
            if span.is_recording() {
                // Values obs made (names and `?`): not scanned again.
                span.set_clean_attribute("db.system.name", "redis");
                span.set_clean_attribute("db.operation.name", what.name);
                span.set_clean_attribute("db.namespace", Value::String(shared.namespace.clone()));
                if let Some(a) = &shared.address {
                    span.set_clean_attribute("server.address", Value::String(a.clone()));
                }
                if let Some(p) = shared.port {
                    span.set_clean_attribute("server.port", p);
                }
                match what.batch {
                    Some(n) => span.set_clean_attribute("db.operation.batch.size", n as i64),
                    None => {
                        if let Some(cmd) = cmd {
                            span.set_clean_attribute("db.query.text", text_of(what.name, cmd));
                        }
                    }
                }
            }
            span
        });
        Op { span, shared: shared.clone(), label: what.label, start: Instant::now(), done: false }
    }

    fn finish(&mut self, failure: Option<Failure>) {
        self.done = true;
        let failed = failure.is_some();
        if let (Some(f), Some(span)) = (failure, &mut self.span) {
            if let Some(code) = &f.code {
                span.set_attribute("db.response.status_code", code.clone());
            }
            span.set_attribute("error.type", f.kind.clone());
            // The server's text can quote an argument (`unknown command 'X', with args
            // beginning with: ...`): the prefix and the kind only.
            span.set_error(format!("redis error {}", f.kind), "redis::RedisError");
        }
        self.record(if failed { "error" } else { "ok" });
    }

    fn record(&self, status: &'static str) {
        if crate::is_off() {
            return;
        }
        if let Some((family, slots)) = &self.shared.metrics.command {
            crate::metrics::series_by_slots(family, slots, |s| match s {
                Slot::Command => self.label,
                Slot::Status => status,
                _ => "",
            })
            .observe_with(self.start.elapsed().as_secs_f64(), self.span.as_ref().and_then(SpanState::exemplar_ids));
        }
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        if !self.done {
            // Dropped before the answer came (a timeout around the call, a cancelled request):
            // the command may or may not have run.
            if let Some(span) = &mut self.span {
                span.set_attribute("error.type", "cancelled");
                span.set_error("cancelled before the answer came".into(), "cancelled");
            }
            self.record("error");
        }
    }
}

/// Why a command failed, without the server's text.
struct Failure {
    /// The server's error prefix (`WRONGTYPE`).
    code: Option<String>,
    /// `error.type`: the prefix, else the client-side kind.
    kind: String,
}

impl Failure {
    fn of(e: &RedisError) -> Failure {
        match e.code() {
            Some(code) => Failure::coded(code),
            None => Failure { code: None, kind: error_type(e) },
        }
    }

    /// The prefix when it looks like one (`WRONGTYPE`, `NOSCRIPT`); anything else is `ERR`: a
    /// script's or a module's error is its first word, which may be a key or a value.
    fn coded(code: &str) -> Failure {
        let prefix = code.len() <= 32
            && code.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
            && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
        let code = if prefix { code } else { "ERR" };
        Failure { code: Some(code.to_owned()), kind: code.to_owned() }
    }
}

/// A server error answered in place of a value (redis-rs hands these back as values and turns
/// them into errors later, when the caller converts the answer).
fn server_error(v: &redis::Value) -> Option<Failure> {
    match v {
        redis::Value::ServerError(e) => Some(Failure::coded(e.code())),
        _ => None,
    }
}

/// `error.type` of a client-side failure.
fn error_type(e: &RedisError) -> String {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connection_dropped() || e.is_connection_refusal() {
        "connection"
    } else if e.is_io_error() {
        "io"
    } else {
        "redis"
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_commands_upper_cased_and_junk_is_other() {
        assert_eq!(intern(b"get", false), ("GET", "get"));
        assert_eq!(intern(b"JSON.GET", false), ("JSON.GET", "json.get"));
        assert_eq!(intern(b"hset", true), ("BATCH HSET", "batch"));
        assert_eq!(intern(b"user@example.org", false), ("OTHER", "other"));
        assert_eq!(intern(b"", false), ("OTHER", "other"));
        assert_eq!(intern(&[b'A'; 33], false), ("OTHER", "other"));
        // Interned once: the same pointer.
        assert!(std::ptr::eq(intern(b"GET", false).0, intern(b"get", false).0));
    }

    #[test]
    fn the_text_keeps_the_command_and_hides_every_argument() {
        let mut cmd = redis::cmd("SET");
        cmd.arg("user:alice@example.org").arg("s3cret").arg("EX").arg(60);
        let d = Described::command(&cmd);
        assert_eq!(d.name, "SET");
        assert_eq!(text_of(d.name, &cmd), "SET ? ? ? ?");
    }

    #[test]
    fn only_an_error_prefix_is_kept_never_a_word_of_the_message() {
        assert_eq!(Failure::coded("WRONGTYPE").code.as_deref(), Some("WRONGTYPE"));
        assert_eq!(Failure::coded("user:alice@example.org").code.as_deref(), Some("ERR"));
        assert_eq!(Failure::coded("Secret").kind, "ERR");
    }

    #[test]
    fn a_pipeline_is_named_by_its_commands() {
        let mut p = redis::pipe();
        p.get("a").get("b");
        let d = Described::pipeline(&p);
        assert_eq!((d.name, d.label, d.batch), ("BATCH GET", "batch", Some(2)));
        p.set("c", 1);
        assert_eq!(Described::pipeline(&p).name, "BATCH");
    }
}
