//! Database telemetry for [sqlx](https://docs.rs/sqlx) 0.9, opted into once where the pool is
//! built (features `sqlx-sqlite`, `sqlx-postgres`).
//!
//! [`Pool::new`] wraps a `sqlx` pool; queries run on `&pool` (or on a [`Transaction`] from
//! [`Pool::begin`]) as they did on the `sqlx` pool, and each one becomes:
//!
//! - a `CLIENT` span, a child of the current span, per OpenTelemetry's database conventions:
//!   named by `db.query.summary` (`SELECT ticket_tiers`), with `db.system.name`,
//!   `db.operation.name`, `db.collection.name`, `db.query.summary`, `db.query.text`,
//!   `db.namespace`, `server.address`/`server.port` (PostgreSQL), `db.response.returned_rows`,
//!   `obs.db.rows_affected`, and on failure `db.response.status_code` (the SQLSTATE) and
//!   `error.type`;
//! - an observation of the catalog histogram given to [`DbMetrics::query_duration`];
//! - when it lasts [`Config::db_slow_query`](crate::config::Config::db_slow_query) or longer
//!   (`OBS_DB_SLOW_QUERY_MS`, default 1 s), one WARN line with its text and duration; and if
//!   its trace was not sampled, the trace's root is kept by the tail rule all the same, marked
//!   `obs.sampling.kept = "slow_query"` (as a failed or slow root is).
//!
//! **No literal leaves the process**: the text of every span, log line and label is the query
//! with each string, number or dollar-quoted literal replaced by `?` and comments dropped;
//! placeholders (`$1`, `?`) stay. A value bound as a parameter never appears at all; a value
//! inlined into the SQL by mistake is replaced. An error's text from the server is not kept
//! (it may quote a value): the span says the SQLSTATE, the error kind and the constraint.
//!
//! The pool's connections (idle, used, the maximum), the acquirers waiting, the time they wait
//! and the acquire timeouts go into the catalog metrics given to [`DbMetrics`], read at scrape
//! time where they are levels.
//!
//! A transaction is a span around its queries: `BEGIN`, the queries run directly in the function
//! that began it, and `COMMIT` or `ROLLBACK` are its children (a query run in a span of its own,
//! e.g. a `#[traced_span]` function given the transaction, is that span's child).
//!
//! ```no_run
//! # #[cfg(feature = "sqlx-sqlite")]
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use obs_runtime::db::{DbMetrics, Pool};
//!
//! let sqlx_pool = sqlx_sqlite::SqlitePoolOptions::new().connect("sqlite::memory:").await?;
//! let pool = Pool::new(sqlx_pool).metrics(DbMetrics::new()); // add your catalog's metrics
//!
//! let n: (i64,) = sqlx_core::query_as::query_as("SELECT count(*) FROM sqlite_master").fetch_one(&pool).await?;
//! let mut tx = pool.begin().await?;
//! sqlx_core::query::query("CREATE TABLE t (a INTEGER)").execute(&mut tx).await?;
//! tx.commit().await?;
//! # let _ = n;
//! # Ok(())
//! # }
//! ```
//!
//! What is not seen: queries run on the `sqlx` pool itself ([`Pool::sqlx`]) or on a connection
//! taken from it. For diesel or sea-orm, see `docs/guides/databases.md`.

mod sql;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Instant;

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use futures_util::StreamExt as _;
use opentelemetry::{StringValue, Value};
use sqlx_core::Either;
use sqlx_core::database::Database;
use sqlx_core::error::{BoxDynError, Error};
use sqlx_core::executor::{Execute, Executor};
use sqlx_core::sql_str::SqlStr;

use crate::metrics::{Def, Exactly, Family, FilledBy, by, kind, label};
use crate::trace::{Kind, SpanSite, SpanState};

/// A database obs knows how to describe (sealed: implemented for the sqlx drivers the features
/// enable).
pub trait Driver: sealed::Sealed {}

impl<DB: sealed::Sealed> Driver for DB {}

use sealed::ConnectionInfo;

/// What obs needs of a driver: in a private module, so that only this crate implements it and
/// none of it is reachable from outside.
mod sealed {
    use std::sync::Arc;

    pub trait Sealed: sqlx_core::database::Database {
        fn connection(options: &<Self::Connection as sqlx_core::connection::Connection>::Options) -> ConnectionInfo;
        fn rows_affected(result: &Self::QueryResult) -> u64;
    }

    /// What the spans say about where the database is.
    #[derive(Debug, Clone, Default)]
    pub struct ConnectionInfo {
        pub(crate) system: &'static str,
        pub(crate) namespace: Option<Arc<str>>,
        pub(crate) address: Option<Arc<str>>,
        pub(crate) port: Option<i64>,
    }
}

#[cfg(feature = "sqlx-postgres")]
impl sealed::Sealed for sqlx_postgres::Postgres {
    fn connection(o: &sqlx_postgres::PgConnectOptions) -> ConnectionInfo {
        ConnectionInfo {
            system: "postgresql",
            namespace: o.get_database().map(Arc::from),
            // A Unix socket has no address of the network kind.
            address: o.get_socket().is_none().then(|| Arc::from(o.get_host())),
            port: o.get_socket().is_none().then(|| i64::from(o.get_port())),
        }
    }

    fn rows_affected(result: &sqlx_postgres::PgQueryResult) -> u64 {
        result.rows_affected()
    }
}

#[cfg(feature = "sqlx-sqlite")]
impl sealed::Sealed for sqlx_sqlite::Sqlite {
    fn connection(o: &sqlx_sqlite::SqliteConnectOptions) -> ConnectionInfo {
        let file = o.get_filename().to_string_lossy();
        // The database file's name (not its directory, which says nothing to an operator);
        // sqlx names an in-memory database `file:sqlx-in-memory-N`.
        let name = if file.starts_with("file:sqlx-in-memory-") {
            ":memory:"
        } else {
            file.rsplit('/').next().unwrap_or(&file)
        };
        ConnectionInfo { system: "sqlite", namespace: Some(Arc::from(name)), address: None, port: None }
    }

    fn rows_affected(result: &sqlx_sqlite::SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// sqlx's `Any`: the database named by the URL's scheme.
#[cfg(feature = "sqlx-any")]
impl sealed::Sealed for sqlx_core::any::Any {
    fn connection(o: &sqlx_core::any::AnyConnectOptions) -> ConnectionInfo {
        let url = &o.database_url;
        let system = match url.scheme() {
            "postgres" | "postgresql" => "postgresql",
            "sqlite" => "sqlite",
            "mysql" => "mysql",
            "mariadb" => "mariadb",
            _ => "other_sql",
        };
        if system == "sqlite" {
            // `sqlite://revel.db`, `sqlite:revel.db`, `sqlite::memory:`: the file's name.
            let whole = format!("{}{}", url.host_str().unwrap_or(""), url.path());
            let name = whole.rsplit('/').next().unwrap_or("").to_owned();
            return ConnectionInfo {
                system,
                namespace: (!name.is_empty()).then(|| Arc::from(name.as_str())),
                address: None,
                port: None,
            };
        }
        let default_port = match system {
            "postgresql" => Some(5432),
            "mysql" | "mariadb" => Some(3306),
            _ => None,
        };
        let database = url.path().trim_start_matches('/');
        ConnectionInfo {
            system,
            namespace: (!database.is_empty()).then(|| Arc::from(database)),
            address: url.host_str().filter(|h| !h.is_empty()).map(Arc::from),
            port: url.port().or(default_port).map(i64::from),
        }
    }

    fn rows_affected(result: &sqlx_core::any::AnyQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// The catalog metrics a [`Pool`] records into; each is optional. Take them from your catalog
/// with [`metric_def!`](crate::metric_def), so that a name the catalog lacks fails to compile,
/// as does a metric of another kind or with other labels than the setter's.
#[derive(Clone, Default)]
pub struct DbMetrics {
    query: Option<(&'static Family, [QuerySlot; 3])>,
    connections: Option<&'static Family>,
    max: Option<&'static Family>,
    pending: Option<&'static Family>,
    wait: Option<&'static Family>,
    timeouts: Option<&'static Family>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QuerySlot {
    QueryType,
    System,
    Status,
    None,
}

impl fmt::Debug for DbMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |x: Option<&'static Family>| x.map(|f| f.def().name);
        f.debug_struct("DbMetrics")
            .field("query_duration", &name(self.query.map(|q| q.0)))
            .field("connections", &name(self.connections))
            .field("max_connections", &name(self.max))
            .field("pending_acquires", &name(self.pending))
            .field("acquire_duration", &name(self.wait))
            .field("acquire_timeouts", &name(self.timeouts))
            .finish()
    }
}

fn family<K, L>(def: Def<K, L>) -> &'static Family {
    crate::metrics::registry().family(def.get())
}

impl DbMetrics {
    /// No metrics (spans and slow-query lines only).
    pub fn new() -> Self {
        Self::default()
    }

    /// Each query's duration in seconds: a histogram labelled by any of `query_type` (the
    /// operation in lower case: `select`, `insert`, `update`, `delete`, `begin`, `commit`,
    /// `rollback`, …, `other` beyond a known list), `db_system` (`postgresql`, `sqlite`) and
    /// `status` (`ok`, `error`).
    pub fn query_duration<L: FilledBy<by::DbQuery>>(mut self, def: Def<kind::Histogram, L>) -> Self {
        let def = def.get();
        let slots = crate::metrics::label_slots(
            def,
            "the database wrapper",
            &[("query_type", QuerySlot::QueryType), ("db_system", QuerySlot::System), ("status", QuerySlot::Status)],
            QuerySlot::None,
        );
        self.query = Some((crate::metrics::registry().family(def), slots));
        self
    }

    /// The pool's connections: a gauge labelled `state` (`idle`, `used`), read at scrape time.
    pub fn connections<L: Exactly<(label::state,)>>(mut self, def: Def<kind::Gauge, L>) -> Self {
        self.connections = Some(family(def));
        self
    }

    /// The most connections the pool opens: a gauge without labels.
    pub fn max_connections<L: Exactly<()>>(mut self, def: Def<kind::Gauge, L>) -> Self {
        self.max = Some(family(def));
        self
    }

    /// Callers waiting for a connection now: a gauge without labels.
    pub fn pending_acquires<L: Exactly<()>>(mut self, def: Def<kind::Gauge, L>) -> Self {
        let f = family(def);
        f.series_for(&[]);
        self.pending = Some(f);
        self
    }

    /// How long each caller waited for a connection, in seconds: a histogram without labels.
    pub fn acquire_duration<L: Exactly<()>>(mut self, def: Def<kind::Histogram, L>) -> Self {
        self.wait = Some(family(def));
        self
    }

    /// Acquires that gave up (the pool's `acquire_timeout`): a counter without labels (shown
    /// at 0 from the start, so that `increase()` sees the first one).
    pub fn acquire_timeouts<L: Exactly<()>>(mut self, def: Def<kind::Counter, L>) -> Self {
        let f = family(def);
        f.series_for(&[]);
        self.timeouts = Some(f);
        self
    }
}

struct Shared<DB: Driver> {
    pool: sqlx_core::pool::Pool<DB>,
    info: ConnectionInfo,
    metrics: DbMetrics,
}

/// A `sqlx` pool whose queries are traced, timed and counted; see the [module](self)
/// documentation. Cloning it is cheap (it shares the pool).
pub struct Pool<DB: Driver> {
    shared: Arc<Shared<DB>>,
}

impl<DB: Driver> Clone for Pool<DB> {
    fn clone(&self) -> Self {
        Pool { shared: self.shared.clone() }
    }
}

impl<DB: Driver> fmt::Debug for Pool<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("db_system", &self.shared.info.system)
            .field("size", &self.shared.pool.size())
            .field("idle", &self.shared.pool.num_idle())
            .finish_non_exhaustive()
    }
}

impl<DB: Driver> Pool<DB> {
    /// Instruments `pool` (built as usual with sqlx's `PoolOptions`).
    pub fn new(pool: sqlx_core::pool::Pool<DB>) -> Self {
        let mut info = DB::connection(&pool.connect_options());
        // Scrubbed once here, set unscanned on every span.
        let scrub = |v: &mut Option<Arc<str>>| {
            if let Some(s) = v
                && let std::borrow::Cow::Owned(clean) = crate::scrub::scrub_text(s)
            {
                *s = Arc::from(clean);
            }
        };
        scrub(&mut info.namespace);
        scrub(&mut info.address);
        Pool { shared: Arc::new(Shared { pool, info, metrics: DbMetrics::default() }) }
    }

    /// Records into `metrics` from now on (set it where the pool is built, before it is cloned:
    /// clones taken before keep recording into the metrics they had).
    pub fn metrics(self, metrics: DbMetrics) -> Self {
        let shared = Arc::new(Shared { pool: self.shared.pool.clone(), info: self.shared.info.clone(), metrics });
        let levels = shared.metrics.connections.is_some() || shared.metrics.max.is_some();
        if levels {
            let weak: Weak<Shared<DB>> = Arc::downgrade(&shared);
            crate::metrics::on_scrape(move || {
                let Some(s) = weak.upgrade() else { return false };
                let size = s.pool.size() as f64;
                let idle = s.pool.num_idle() as f64;
                if let Some(c) = s.metrics.connections {
                    c.series_for(&["idle"]).set_f64(idle);
                    c.series_for(&["used"]).set_f64((size - idle).max(0.0));
                }
                if let Some(m) = s.metrics.max {
                    m.series_for(&[]).set_f64(f64::from(s.pool.options().get_max_connections()));
                }
                true
            });
        }
        Pool { shared }
    }

    /// The `sqlx` pool underneath: what runs on it is not traced.
    pub fn sqlx(&self) -> &sqlx_core::pool::Pool<DB> {
        &self.shared.pool
    }

    /// Closes the pool (see sqlx's `Pool::close`).
    pub async fn close(&self) {
        self.shared.pool.close().await
    }

    /// Begins a transaction: a span (`transaction`) around its `BEGIN`, its queries and its
    /// `COMMIT` or `ROLLBACK` (a transaction dropped without either is rolled back by sqlx).
    pub async fn begin(&self) -> Result<Transaction<DB>, Error>
    where
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    {
        self.begin_inner(None).await
    }

    /// [`begin`](Self::begin) with a statement of your own, e.g. `BEGIN IMMEDIATE` on SQLite
    /// (a writer's lock taken at once) or `BEGIN ISOLATION LEVEL SERIALIZABLE` on PostgreSQL.
    pub async fn begin_with(&self, statement: &'static str) -> Result<Transaction<DB>, Error>
    where
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    {
        self.begin_inner(Some(statement)).await
    }

    async fn begin_inner(&self, statement: Option<&'static str>) -> Result<Transaction<DB>, Error>
    where
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    {
        let parent = crate::trace::current_ids().map_or(0, |(_, s)| s);
        let mut span = SpanState::start(&TRANSACTION);
        if span.is_recording() {
            span.set_clean_attribute("db.system.name", self.shared.info.system);
            set_connection_attributes(&mut span, &self.shared.info);
        }
        let mut op = child_of(&mut span, || Op::start(&self.shared, entry(statement.unwrap_or("BEGIN"))));
        let conn = match acquire(&self.shared).await {
            Ok(conn) => conn,
            Err(e) => {
                op.fail(&e);
                drop(op);
                span.set_error(format!("BEGIN failed: {}", error_type(&e)), "db");
                return Err(e);
            }
        };
        let statement = statement.map(sqlx_core::sql_str::SqlSafeStr::into_sql_str);
        match sqlx_core::transaction::Transaction::begin(conn, statement).await {
            Ok(tx) => {
                drop(op);
                Ok(Transaction { tx: Some(tx), span, shared: self.shared.clone(), parent })
            }
            Err(e) => {
                op.fail(&e);
                drop(op);
                span.set_error(format!("BEGIN failed: {}", error_type(&e)), "db");
                Err(e)
            }
        }
    }
}

static QUERY: SpanSite = SpanSite { name: "db.query", level: crate::trace::Level::Info, kind: Kind::Client };
static TRANSACTION: SpanSite = SpanSite { name: "transaction", level: crate::trace::Level::Info, kind: Kind::Internal };

/// Runs `f` with `span` as the current span (the parent of what `f` starts).
fn child_of<R>(span: &mut SpanState, f: impl FnOnce() -> R) -> R {
    let prev = span.swap_in();
    let out = f();
    span.swap_out(prev);
    out
}

/// (Scrubbed once, in [`Pool::new`].)
fn set_connection_attributes(span: &mut SpanState, info: &ConnectionInfo) {
    if let Some(n) = &info.namespace {
        span.set_clean_attribute("db.namespace", Value::String(StringValue::from(n.clone())));
    }
    if let Some(a) = &info.address {
        span.set_clean_attribute("server.address", Value::String(StringValue::from(a.clone())));
    }
    if let Some(p) = info.port {
        span.set_clean_attribute("server.port", p);
    }
}

/// A transaction of a [`Pool`]: run queries on `&mut tx`, then [`commit`](Self::commit) or
/// [`rollback`](Self::rollback).
pub struct Transaction<DB: Driver> {
    tx: Option<sqlx_core::transaction::Transaction<'static, DB>>,
    span: SpanState,
    shared: Arc<Shared<DB>>,
    /// The span the transaction began in: queries run directly there are the transaction's.
    parent: u64,
}

impl<DB: Driver> fmt::Debug for Transaction<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction").field("db_system", &self.shared.info.system).finish_non_exhaustive()
    }
}

impl<DB: Driver> Transaction<DB> {
    /// Commits it (a `COMMIT` span inside the transaction's).
    pub async fn commit(mut self) -> Result<(), Error> {
        self.end("COMMIT").await
    }

    /// Rolls it back (a `ROLLBACK` span inside the transaction's).
    pub async fn rollback(mut self) -> Result<(), Error> {
        self.end("ROLLBACK").await
    }

    async fn end(&mut self, what: &'static str) -> Result<(), Error> {
        let Some(tx) = self.tx.take() else { return Ok(()) };
        let shared = self.shared.clone();
        let mut op = child_of(&mut self.span, || Op::start(&shared, entry(what)));
        let out = if what == "COMMIT" { tx.commit().await } else { tx.rollback().await };
        if let Err(e) = &out {
            op.fail(e);
            self.span.set_error(format!("{what} failed: {}", error_type(e)), "db");
        }
        drop(op);
        self.span.set_attribute("obs.db.transaction.end", if what == "COMMIT" { "commit" } else { "rollback" });
        out
    }

    /// Starts a query's span: the transaction's child when run where the transaction began.
    fn start(&mut self, entry: Arc<Entry>) -> Op<DB> {
        let here = crate::trace::current_ids().map_or(0, |(_, s)| s);
        if here == self.parent {
            let shared = self.shared.clone();
            child_of(&mut self.span, || Op::start(&shared, entry))
        } else {
            Op::start(&self.shared, entry)
        }
    }

    fn conn(&mut self) -> &mut DB::Connection {
        // `tx` is only taken by `commit`/`rollback`, which consume the transaction.
        self.tx.as_deref_mut().expect("a transaction is used until it is committed or rolled back")
    }
}

impl<DB: Driver> Drop for Transaction<DB> {
    fn drop(&mut self) {
        if self.tx.is_some() {
            // sqlx rolls it back when the connection goes back to the pool.
            self.span.set_attribute("obs.db.transaction.end", "dropped");
        }
    }
}

/// What is known of one SQL text, computed once per distinct text (see [`entry`]).
struct Entry {
    name: &'static str,
    text: StringValue,
    summary: StringValue,
    operation: StringValue,
    collection: Option<StringValue>,
    query_type: &'static str,
}

/// Distinct SQL texts remembered at most (each leaks its span name, a few dozen bytes): an
/// application has a fixed set of statements; one that builds texts without bound gets spans
/// named by the operation alone past this.
const MAX_ENTRIES: usize = 2048;

const OPERATIONS: [&str; 24] = [
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "WITH",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "CREATE",
    "DROP",
    "ALTER",
    "PRAGMA",
    "SET",
    "SHOW",
    "VALUES",
    "EXPLAIN",
    "TRUNCATE",
    "REPLACE",
    "COPY",
    "LOCK",
    "VACUUM",
    "ANALYZE",
];
const QUERY_TYPES: [&str; 24] = [
    "select",
    "insert",
    "update",
    "delete",
    "with",
    "begin",
    "commit",
    "rollback",
    "savepoint",
    "release",
    "create",
    "drop",
    "alter",
    "pragma",
    "set",
    "show",
    "values",
    "explain",
    "truncate",
    "replace",
    "copy",
    "lock",
    "vacuum",
    "analyze",
];

fn entry(sql: &str) -> Arc<Entry> {
    static CACHE: OnceLock<RwLock<HashMap<Box<str>, Arc<Entry>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(e) = cache.read().unwrap_or_else(|e| e.into_inner()).get(sql) {
        return e.clone();
    }
    let a = sql::analyze(sql);
    let known = OPERATIONS.iter().position(|o| *o == a.operation);
    let summary = a.summary();
    let mut map = cache.write().unwrap_or_else(|e| e.into_inner());
    let full = map.len() >= MAX_ENTRIES;
    let name: &'static str = match known {
        _ if summary.is_empty() => "db.query",
        _ if !full => Box::leak(summary.clone().into_boxed_str()),
        Some(i) => OPERATIONS[i],
        None => "db.query",
    };
    // Shared strings: a span's copy of an attribute is a reference count, not an allocation.
    let shared = |s: &str| StringValue::from(Arc::<str>::from(s));
    let e = Arc::new(Entry {
        name,
        text: shared(&a.text),
        summary: shared(&summary),
        operation: shared(&a.operation),
        collection: a.collection().map(shared),
        query_type: known.map_or("other", |i| QUERY_TYPES[i]),
    });
    if !full {
        map.insert(sql.into(), e.clone());
    }
    e
}

/// One query from its start to its end: the span, the rows, the outcome.
struct Op<DB: Driver> {
    span: SpanState,
    entry: Arc<Entry>,
    shared: Arc<Shared<DB>>,
    start: Instant,
    returned: u64,
    affected: u64,
    failed: bool,
}

impl<DB: Driver> Op<DB> {
    fn start(shared: &Arc<Shared<DB>>, entry: Arc<Entry>) -> Op<DB> {
        let mut span = SpanState::start(&QUERY);
        span.rename(entry.name);
        if span.is_recording() {
            // Values obs made (the text without its literals): not scanned again.
            span.set_clean_attribute("db.system.name", shared.info.system);
            span.set_clean_attribute("db.operation.name", Value::String(entry.operation.clone()));
            if let Some(c) = &entry.collection {
                span.set_clean_attribute("db.collection.name", Value::String(c.clone()));
            }
            span.set_clean_attribute("db.query.summary", Value::String(entry.summary.clone()));
            span.set_clean_attribute("db.query.text", Value::String(entry.text.clone()));
            set_connection_attributes(&mut span, &shared.info);
        }
        Op { span, entry, shared: shared.clone(), start: Instant::now(), returned: 0, affected: 0, failed: false }
    }

    fn rows_returned(&mut self, n: u64) {
        self.returned += n;
    }

    fn fail(&mut self, e: &Error) {
        self.failed = true;
        let kind = error_type(e);
        if let Some(code) = e.as_database_error().and_then(|d| d.code()) {
            self.span.set_attribute("db.response.status_code", code.into_owned());
        }
        self.span.set_attribute("error.type", kind.clone());
        // The server's text may quote a value: the span keeps the code, the kind and the
        // constraint instead.
        let message = match e.as_database_error() {
            Some(d) => {
                let mut m = format!("database error {kind} ({:?})", d.kind());
                if let Some(c) = d.constraint() {
                    m.push_str(&format!(" on constraint {c}"));
                }
                m
            }
            None => e.to_string(),
        };
        self.span.set_error(message, "sqlx::Error");
    }
}

impl<DB: Driver> Drop for Op<DB> {
    fn drop(&mut self) {
        if crate::is_off() {
            return;
        }
        let elapsed = self.start.elapsed();
        if self.span.is_recording() {
            self.span.set_clean_attribute("db.response.returned_rows", self.returned as i64);
            if self.affected > 0 {
                self.span.set_clean_attribute("obs.db.rows_affected", self.affected as i64);
            }
        }
        if let Some((family, slots)) = &self.shared.metrics.query {
            let status = if self.failed { "error" } else { "ok" };
            crate::metrics::series_by_slots(family, slots, |s| match s {
                QuerySlot::QueryType => self.entry.query_type,
                QuerySlot::System => self.shared.info.system,
                QuerySlot::Status => status,
                QuerySlot::None => "",
            })
            .observe_with(elapsed.as_secs_f64(), self.span.exemplar_ids());
        }
        let micros = elapsed.as_micros().min(u64::MAX as u128) as u64;
        if micros >= crate::DB_SLOW_MICROS.load(std::sync::atomic::Ordering::Relaxed) {
            // An unsampled trace with a slow query is kept by its root, as a slow request is.
            self.span.keep_trace();
            let text = self.entry.text.as_str();
            tracing::warn!(
                target: "obs::db",
                db_system = self.shared.info.system,
                query = text,
                duration_ms = micros as f64 / 1000.0,
                rows_returned = self.returned,
                rows_affected = self.affected,
                "slow database query"
            );
        }
    }
}

/// `error.type`: the SQLSTATE (or the driver's code) for a database error, else the kind.
fn error_type(e: &Error) -> String {
    if let Some(code) = e.as_database_error().and_then(|d| d.code()) {
        return code.into_owned();
    }
    match e {
        Error::PoolTimedOut => "pool_timed_out",
        Error::PoolClosed => "pool_closed",
        Error::Io(_) => "io",
        Error::Tls(_) => "tls",
        Error::Protocol(_) => "protocol",
        Error::RowNotFound => "row_not_found",
        Error::ColumnDecode { .. } | Error::Decode(_) => "decode",
        Error::Encode(_) => "encode",
        Error::WorkerCrashed => "worker_crashed",
        Error::Configuration(_) => "configuration",
        Error::Database(_) => "database",
        _ => "other",
    }
    .to_owned()
}

/// A connection from the pool, the wait timed and counted.
async fn acquire<DB: Driver>(shared: &Shared<DB>) -> Result<sqlx_core::pool::PoolConnection<DB>, Error> {
    let m = &shared.metrics;
    if m.pending.is_none() && m.wait.is_none() && m.timeouts.is_none() || crate::is_off() {
        return shared.pool.acquire().await;
    }
    struct Pending(Option<&'static Family>);
    impl Drop for Pending {
        fn drop(&mut self) {
            if let Some(p) = self.0 {
                p.series_for(&[]).add_f64(-1.0);
            }
        }
    }
    if let Some(p) = m.pending {
        p.series_for(&[]).add_f64(1.0);
    }
    let pending = Pending(m.pending);
    let start = Instant::now();
    let out = shared.pool.acquire().await;
    drop(pending);
    if let Some(w) = m.wait {
        w.series_for(&[]).observe(start.elapsed().as_secs_f64());
    }
    if let (Err(Error::PoolTimedOut), Some(t)) = (&out, m.timeouts) {
        t.series_for(&[]).inc();
    }
    out
}

/// A query taken apart so that its text is known before it runs (sqlx's `Execute::sql`
/// consumes the query).
struct Taken<DB: Database> {
    sql: SqlStr,
    statement: Option<DB::Statement>,
    arguments: Option<Result<Option<DB::Arguments>, BoxDynError>>,
    persistent: bool,
}

impl<'q, DB: Database> Execute<'q, DB> for Taken<DB> {
    fn sql(self) -> SqlStr {
        self.sql
    }

    fn statement(&self) -> Option<&DB::Statement> {
        self.statement.as_ref()
    }

    fn take_arguments(&mut self) -> Result<Option<DB::Arguments>, BoxDynError> {
        self.arguments.take().unwrap_or(Ok(None))
    }

    fn persistent(&self) -> bool {
        self.persistent
    }
}

fn take<'q, DB: Database, E: Execute<'q, DB>>(mut query: E) -> (Taken<DB>, Arc<Entry>) {
    let arguments = Some(query.take_arguments());
    let persistent = query.persistent();
    let statement = query.statement().cloned();
    let sql = query.sql();
    let entry = entry(sql.as_str());
    (Taken { sql, statement, arguments, persistent }, entry)
}

/// What `fetch_many` streams.
type Rows<'e, DB> = BoxStream<'e, Result<Either<<DB as Database>::QueryResult, <DB as Database>::Row>, Error>>;

/// Runs `query` on `conn` as a stream, counting rows into `op`.
fn stream<'e, DB: Driver>(
    mut op: Op<DB>,
    conn: impl std::ops::DerefMut<Target = DB::Connection> + Send + 'e,
    query: Taken<DB>,
) -> Rows<'e, DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    Box::pin(async_stream::stream! {
        let mut conn = conn;
        let mut rows = (&mut *conn).fetch_many(query);
        while let Some(item) = rows.next().await {
            match &item {
                Ok(Either::Left(result)) => op.affected += DB::rows_affected(result),
                Ok(Either::Right(_)) => op.returned += 1,
                Err(e) => op.fail(e),
            }
            yield item;
        }
    })
}

impl<'p, DB: Driver> Executor<'p> for &'p Pool<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    type Database = DB;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> Rows<'e, DB>
    where
        'p: 'e,
        E: 'q + Execute<'q, DB>,
    {
        let (query, entry) = take(query);
        let shared = self.shared.clone();
        let mut op = Op::start(&shared, entry);
        Box::pin(async_stream::stream! {
            match acquire(&shared).await {
                Ok(conn) => {
                    let mut rows = stream::<DB>(op, conn, query);
                    while let Some(item) = rows.next().await {
                        yield item;
                    }
                }
                Err(e) => {
                    op.fail(&e);
                    yield Err(e);
                }
            }
        })
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<DB::Row>, Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, DB>,
    {
        let (query, entry) = take(query);
        let shared = self.shared.clone();
        let mut op = Op::start(&shared, entry);
        Box::pin(async move {
            let mut conn = match acquire(&shared).await {
                Ok(conn) => conn,
                Err(e) => {
                    op.fail(&e);
                    return Err(e);
                }
            };
            let out = (&mut *conn).fetch_optional(query).await;
            match &out {
                Ok(row) => op.rows_returned(u64::from(row.is_some())),
                Err(e) => op.fail(e),
            }
            out
        })
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [DB::TypeInfo],
    ) -> BoxFuture<'e, Result<DB::Statement, Error>>
    where
        'p: 'e,
    {
        // Preparing is not a query of the application's: not traced.
        (&self.shared.pool).prepare_with(sql, parameters)
    }

    #[doc(hidden)]
    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<sqlx_core::describe::Describe<DB>, Error>>
    where
        'p: 'e,
    {
        (&self.shared.pool).describe(sql)
    }
}

impl<'t, DB: Driver> Executor<'t> for &'t mut Transaction<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    type Database = DB;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> Rows<'e, DB>
    where
        't: 'e,
        E: 'q + Execute<'q, DB>,
    {
        let (query, entry) = take(query);
        let op = self.start(entry);
        stream::<DB>(op, Reborrow(self.conn()), query)
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<DB::Row>, Error>>
    where
        't: 'e,
        E: 'q + Execute<'q, DB>,
    {
        let (query, entry) = take(query);
        let mut op = self.start(entry);
        let conn = self.conn();
        Box::pin(async move {
            let out = conn.fetch_optional(query).await;
            match &out {
                Ok(row) => op.rows_returned(u64::from(row.is_some())),
                Err(e) => op.fail(e),
            }
            out
        })
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [DB::TypeInfo],
    ) -> BoxFuture<'e, Result<DB::Statement, Error>>
    where
        't: 'e,
    {
        self.conn().prepare_with(sql, parameters)
    }

    #[doc(hidden)]
    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<sqlx_core::describe::Describe<DB>, Error>>
    where
        't: 'e,
    {
        self.conn().describe(sql)
    }
}

/// A `&mut` connection as something that derefs to it (for [`stream`]).
struct Reborrow<'a, C>(&'a mut C);

impl<C> std::ops::Deref for Reborrow<'_, C> {
    type Target = C;
    fn deref(&self) -> &C {
        self.0
    }
}

impl<C> std::ops::DerefMut for Reborrow<'_, C> {
    fn deref_mut(&mut self) -> &mut C {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_computed_once_per_text_and_name_the_span_by_the_summary() {
        let a = entry("SELECT * FROM tickets WHERE id = 'x'");
        let b = entry("SELECT * FROM tickets WHERE id = 'x'");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(
            (a.name, a.query_type, a.text.as_str()),
            ("SELECT tickets", "select", "SELECT * FROM tickets WHERE id = ?")
        );
        assert_eq!(entry("frobnicate the thing").query_type, "other");
        assert_eq!(entry("   ").name, "db.query");
    }
}
