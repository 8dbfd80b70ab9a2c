//! Revel's database: SQLite by default (a file `cargo run -p revel` creates and migrates), or
//! PostgreSQL by `DATABASE_URL`, through sqlx's `Any` driver (one binary for both) and obs's
//! instrumented pool. The schema and the demo data are the migrations under `migrations/`.

use std::borrow::Cow;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};

/// The pool every flow runs its queries on: each query a span, timed into
/// `revel_database_query_duration_seconds`, the pool in the `revel_database_pool_*` metrics.
pub type Pool = obs_runtime::db::Pool<sqlx::Any>;

/// What a transaction's queries run on (a [`Tx`] derefs to it).
pub type Transaction = obs_runtime::db::Transaction<sqlx::Any>;

/// A transaction that writes ([`App::begin_write`](crate::App::begin_write)): on SQLite it also
/// holds the process's [`Writer`] turn until it commits, or until its rollback is done when it
/// is dropped uncommitted. Derefs to obs's transaction,
/// which is what queries run on (`.execute(&mut *tx)`).
pub struct Tx {
    /// `None` once committed (or handed to the rollback in `Drop`).
    inner: Option<Transaction>,
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Tx {
    /// Commits, then gives the turn to the next writer.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let inner = self.inner.take().expect("a transaction is committed once");
        inner.commit().await
    }
}

/// A transaction dropped without a commit (an error, a refusal, a request gone) is rolled back
/// before its turn passes on: dropped as it is, its rollback would only be queued on the
/// connection, and the next writer could still find SQLite's lock taken and sleep in the busy
/// handler. The rollback runs in a task of its own, in the same trace (a `ROLLBACK` span inside
/// the transaction's).
impl Drop for Tx {
    fn drop(&mut self) {
        let (Some(inner), Some(turn)) = (self.inner.take(), self.turn.take()) else { return };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(obs_runtime::trace::with_current_context(async move {
                let _ = inner.rollback().await;
                drop(turn);
            }));
        }
    }
}

impl std::ops::Deref for Tx {
    type Target = Transaction;
    fn deref(&self) -> &Self::Target {
        self.inner.as_ref().expect("a transaction is used until it ends")
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.inner.as_mut().expect("a transaction is used until it ends")
    }
}

/// SQLite's one writer, taken in turn inside the process. SQLite lets one connection write at a
/// time; a writer that finds the lock taken sleeps in SQLite's busy handler (1, 2, 5, 10 … 100 ms)
/// and tries again, while the write it waits for takes well under a millisecond. Under the load
/// bench that was 0.63–0.67 busy-handler sleeps per request (`docs/design/database.md`), with a
/// quarter of the CPU idle. Writers now queue here, in order, each woken as soon
/// as the one before it ends. PostgreSQL locks rows, not the database: no turn there.
#[derive(Clone, Debug)]
pub struct Writer(Option<std::sync::Arc<tokio::sync::Mutex<()>>>);

impl Writer {
    /// A turn to take on SQLite, none on PostgreSQL.
    pub fn for_backend(backend: Backend) -> Writer {
        Writer((backend == Backend::Sqlite).then(|| std::sync::Arc::new(tokio::sync::Mutex::new(()))))
    }

    /// Waits for the turn (`None` on PostgreSQL). A writer that waited [`ACQUIRE`] goes ahead
    /// without it, and SQLite's busy handler decides as before: no wait here can hang a request,
    /// even one that writes outside its own open transaction.
    pub async fn turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let lock = self.0.clone()?;
        match tokio::time::timeout(ACQUIRE, lock.lock_owned()).await {
            Ok(turn) => Some(turn),
            Err(_) => {
                tracing::warn!(waited_s = ACQUIRE.as_secs(), "a database write went ahead without its turn");
                None
            }
        }
    }

    /// Begins a transaction that writes, once it is this writer's turn.
    pub async fn begin(&self, pool: &Pool, backend: Backend) -> Result<Tx, sqlx::Error> {
        let turn = self.turn().await;
        Ok(Tx { inner: Some(pool.begin_with(backend.begin_write()).await?), turn })
    }
}

/// The default `DATABASE_URL`: a file in the working directory, created when missing.
pub const DEFAULT_URL: &str = "sqlite://revel.db?mode=rwc";

/// Which database the URL named: the few statements that differ between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres` written the way the backend wants it.
    pub fn pick(self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self {
            Backend::Sqlite => sqlite,
            Backend::Postgres => postgres,
        }
    }

    /// How a transaction that writes begins: on SQLite with the writer's lock taken at once (a
    /// deferred transaction that reads, then writes, fails when another writer got there
    /// first); on PostgreSQL rows are locked by the statements (`FOR UPDATE`).
    pub fn begin_write(self) -> &'static str {
        self.pick("BEGIN IMMEDIATE", "BEGIN")
    }
}

/// How long a request waits for a pool connection before it fails with 503 (and for its turn to
/// write, [`Writer::turn`]).
const ACQUIRE: Duration = Duration::from_secs(5);

/// Connects, creates the SQLite file if needed (in write-ahead-log mode), and migrates. The
/// error names `DATABASE_URL` and says what was expected.
pub async fn connect(url: &str, max_connections: u32) -> Result<(Pool, Backend), String> {
    sqlx::any::install_default_drivers();
    let backend = if url.starts_with("sqlite:") {
        Backend::Sqlite
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Backend::Postgres
    } else {
        return Err(format!(
            "DATABASE_URL={url:?} is invalid: expected sqlite://FILE?mode=rwc (the default is {DEFAULT_URL}) or \
             postgres://USER:PASSWORD@HOST:PORT/DATABASE"
        ));
    };
    let mut options = sqlx::any::AnyPoolOptions::new().max_connections(max_connections).acquire_timeout(ACQUIRE);
    if backend == Backend::Sqlite {
        // With the write-ahead log (below), a commit need not reach the disk before the writer's
        // lock is released: SQLite's recommended setting for WAL, which keeps the database
        // consistent after a crash (the last commits may be lost on power loss, not corrupted).
        options = options.after_connect(|conn, _| {
            Box::pin(async move { sqlx::Executor::execute(conn, "PRAGMA synchronous = NORMAL").await.map(drop) })
        });
    }
    let pool =
        options.connect(url).await.map_err(|e| format!("DATABASE_URL: cannot connect to {}: {e}", redacted(url)))?;
    if backend == Backend::Sqlite {
        // The write-ahead log, a setting of the file (kept by every later connection): readers no
        // longer block the writer's commit nor wait for it, so only writers queue for SQLite's one
        // writer's lock. In the default rollback journal, a commit waits for every reader and
        // fsyncs under the lock; slowed down under valgrind, a request failed with a database
        // error in CI (see docs/design/database.md).
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
            .fetch_one(&pool)
            .await
            .map_err(|e| format!("DATABASE_URL: {}: cannot turn on the write-ahead log: {e}", redacted(url)))?;
        // An in-memory database answers `memory`: it has no log to write ahead of.
        if mode != "wal" && mode != "memory" {
            return Err(format!(
                "DATABASE_URL: {}: SQLite kept journal mode {mode:?}, expected \"wal\"",
                redacted(url)
            ));
        }
    }
    // (sqlx turns SQLite's foreign keys on for every connection it opens.)
    migrator(backend).run(&pool).await.map_err(|e| format!("DATABASE_URL: migrating {} failed: {e}", redacted(url)))?;
    let pool = obs_runtime::db::Pool::new(pool).metrics(
        obs_runtime::db::DbMetrics::new()
            .query_duration(obs_runtime::metric_def!("revel_database_query_duration_seconds"))
            .connections(obs_runtime::metric_def!("revel_database_pool_connections"))
            .max_connections(obs_runtime::metric_def!("revel_database_pool_max_connections"))
            .pending_acquires(obs_runtime::metric_def!("revel_database_pool_pending_acquires"))
            .acquire_duration(obs_runtime::metric_def!("revel_database_pool_acquire_duration_seconds"))
            .acquire_timeouts(obs_runtime::metric_def!("revel_database_pool_acquire_timeouts_total")),
    );
    Ok((pool, backend))
}

/// The URL without its password.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{user}:***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// The migrations, compiled in: the binary migrates wherever it runs.
fn migrator(backend: Backend) -> Migrator {
    let files: [(i64, &str, &'static str); 3] = match backend {
        Backend::Sqlite => [
            (1, "schema", include_str!("../migrations/sqlite/0001_schema.sql")),
            (2, "seed", include_str!("../migrations/sqlite/0002_seed.sql")),
            (3, "submissions", include_str!("../migrations/sqlite/0003_submissions.sql")),
        ],
        Backend::Postgres => [
            (1, "schema", include_str!("../migrations/postgres/0001_schema.sql")),
            (2, "seed", include_str!("../migrations/postgres/0002_seed.sql")),
            (3, "submissions", include_str!("../migrations/postgres/0003_submissions.sql")),
        ],
    };
    Migrator::with_migrations(
        files
            .into_iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(name),
                    MigrationType::Simple,
                    sqlx::SqlSafeStr::into_sql_str(sql),
                    false,
                )
            })
            .collect(),
    )
}

/// A database of its own for a test: a SQLite file under the temporary directory.
pub async fn for_tests() -> (Pool, Backend) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("revel-test-{}-{n}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let url = format!("sqlite://{}?mode=rwc", path.display());
    connect(&url, 4).await.expect("a test database")
}

#[cfg(test)]
mod tests {
    /// Two connections open at once: the journal mode is the file's, `synchronous` each
    /// connection's (set as the pool opens it).
    #[tokio::test(flavor = "current_thread")]
    async fn sqlite_writes_ahead_on_every_connection() {
        let (pool, backend) = super::for_tests().await;
        assert_eq!(backend, super::Backend::Sqlite);
        let mut a = pool.begin_with("BEGIN").await.unwrap();
        let mut b = pool.begin_with("BEGIN").await.unwrap();
        for tx in [&mut a, &mut b] {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut *tx).await.unwrap();
            assert_eq!(mode, "wal");
            let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut *tx).await.unwrap();
            assert_eq!(synchronous, 1, "synchronous = NORMAL");
        }
    }

    /// A writer waits for the one before it, however that one ends; PostgreSQL takes no turn.
    #[tokio::test(flavor = "current_thread")]
    async fn sqlite_writers_take_turns() {
        let (pool, backend) = super::for_tests().await;
        let writer = super::Writer::for_backend(backend);
        let zero = std::time::Duration::ZERO;
        for commit in [true, false] {
            let tx = writer.begin(&pool, backend).await.unwrap();
            let mut next = std::pin::pin!(writer.turn());
            // Polled once: the open transaction holds the turn.
            assert!(tokio::time::timeout(zero, &mut next).await.is_err(), "a second writer went ahead");
            if commit {
                tx.commit().await.unwrap();
                assert!(tokio::time::timeout(zero, &mut next).await.expect("the turn, once committed").is_some());
            } else {
                // Given back by the rollback's task, once the rollback is done (a minute: a hang
                // fails the test, the wait itself takes microseconds).
                drop(tx);
                let turn = tokio::time::timeout(std::time::Duration::from_secs(60), &mut next).await;
                assert!(turn.expect("the turn, once rolled back").is_some());
            }
        }
        assert!(super::Writer::for_backend(super::Backend::Postgres).turn().await.is_none());
    }

    #[test]
    fn passwords_are_not_repeated_in_errors() {
        assert_eq!(super::redacted("postgres://revel:s3cret@db:5432/revel"), "postgres://revel:***@db:5432/revel");
        assert_eq!(super::redacted("sqlite://revel.db?mode=rwc"), "sqlite://revel.db?mode=rwc");
    }
}
