//! Redis, when `REDIS_URL` names one: the background queue's backend (see [`crate::tasks`]) and
//! a cache of event details in front of the database. Every command goes through obs's Redis
//! wrapper: a CLIENT span inside the request or task that sends it (no key or value recorded),
//! its duration in `revel_redis_command_duration_seconds`, cache lookups in
//! `revel_cache_requests_total`.

use std::time::Duration;

use obs_runtime::redis::{Connection, RedisMetrics};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A connection to Revel's Redis (a connection manager: it reconnects by itself), cheap to clone.
pub type Conn = Connection<ConnectionManager>;

/// How long an event's details stay cached (they are also dropped when the event changes).
pub const EVENT_TTL_SECONDS: u64 = 30;

/// Revel's Redis: the shared connection, and the client to open the worker's own (a blocking
/// pop must not hold up the commands of requests).
#[derive(Clone)]
pub struct Redis {
    pub conn: Conn,
    client: redis::Client,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("conn", &self.conn).finish_non_exhaustive()
    }
}

fn metrics() -> RedisMetrics {
    RedisMetrics::new()
        .command_duration(obs_runtime::metric_def!("revel_redis_command_duration_seconds"))
        .cache_requests(obs_runtime::metric_def!("revel_cache_requests_total"))
}

/// What a malformed or unreachable `REDIS_URL` says (the URL's password is not repeated).
fn invalid(url: &str, why: impl std::fmt::Display) -> String {
    // The user part ends at the last `@` (a password may hold one).
    let shown = match url.rsplit_once('@') {
        Some((_, host)) => format!("redis://…@{host}"),
        None => url.to_owned(),
    };
    format!("REDIS_URL={shown:?}: {why} (expected redis://[:PASSWORD@]HOST[:PORT][/DB], e.g. redis://127.0.0.1:6379/0)")
}

impl Redis {
    /// Connects to `url` (`REDIS_URL`); the error names the variable and the expected form.
    pub async fn connect(url: &str) -> Result<Redis, String> {
        let client = redis::Client::open(url).map_err(|e| invalid(url, e))?;
        let manager = ConnectionManager::new_with_config(client.clone(), config(Duration::from_millis(500)))
            .await
            .map_err(|e| invalid(url, format_args!("cannot connect: {e}")))?;
        let conn = Connection::new(manager, client.get_connection_info()).metrics(metrics());
        Ok(Redis { conn, client })
    }

    /// A connection of the worker's own, whose answers may take `wait` (a blocking pop).
    pub async fn dedicated(&self, wait: Duration) -> redis::RedisResult<Conn> {
        let manager = ConnectionManager::new_with_config(self.client.clone(), config(wait)).await?;
        Ok(Connection::new(manager, self.client.get_connection_info()).metrics(metrics()))
    }
}

fn config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response_timeout))
        // Reconnection attempts back off; a command while disconnected fails at once.
        .set_number_of_retries(2)
}

/// The cache key of an event's details.
pub fn event_key(event_id: u64) -> String {
    format!("revel:event:{event_id}")
}
