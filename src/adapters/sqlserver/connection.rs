//! One pooled connection and its round trips, each bounded by the statement timeout; a connection
//! is marked broken (and so closed by the pool instead of reused) while a request is in flight and after
//! any failure that leaves it in an unknown state.

use super::errors::map_error;
use super::values::bind;
use crate::store::{SqlValue, StoreError};
use std::time::Duration;
use tiberius::Client;
use tokio::net::TcpStream;
use tokio_util::compat::Compat;

/// One pooled connection.
pub(super) struct SqlConnection {
    pub(super) client: Client<Compat<TcpStream>>,
    /// Set while a request is in flight and after any failure that leaves the connection unusable; bb8
    /// drops a broken connection instead of putting it back.
    pub(super) broken: bool,
    /// How long one round trip may take (`PROCFWK_SQL_STATEMENT_TIMEOUT_SECS`): past it the request is
    /// abandoned and, being still in flight, leaves the connection broken — a peer that went silent
    /// without a FIN or RST is noticed instead of waited on.
    pub(super) round_trip_limit: Duration,
}

/// A round trip ran past the statement timeout: its connection's state is unknown.
fn round_trip_timed_out(sql: &str, limit: Duration) -> StoreError {
    let head: String = sql.chars().take(60).collect();
    StoreError::Connection(format!(
        "{head:?} did not finish within {:.1} s",
        limit.as_secs_f64()
    ))
}

impl SqlConnection {
    /// Record the outcome of a request: only a clean answer (rows, or an error the server reported)
    /// leaves the connection usable.
    fn settle<T>(&mut self, result: Result<T, tiberius::error::Error>) -> Result<T, StoreError> {
        match result {
            Ok(v) => {
                self.broken = false;
                Ok(v)
            }
            Err(e @ tiberius::error::Error::Server(_)) => {
                self.broken = false;
                Err(map_error(e))
            }
            Err(e) => {
                self.broken = true;
                Err(map_error(e))
            }
        }
    }

    pub(super) async fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.broken = true;
        let limit = self.round_trip_limit;
        let client = &mut self.client;
        let request = async { client.simple_query(sql).await?.into_results().await };
        match tokio::time::timeout(limit, request).await {
            Ok(result) => self.settle(result).map(|_| ()),
            // Dropped in flight: `broken` stays set.
            Err(_) => Err(round_trip_timed_out(sql, limit)),
        }
    }

    pub(super) async fn query(
        &mut self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<tiberius::Row>, StoreError> {
        self.broken = true;
        let limit = self.round_trip_limit;
        let client = &mut self.client;
        let request = async {
            bind(sql, params)
                .query(client)
                .await?
                .into_first_result()
                .await
        };
        match tokio::time::timeout(limit, request).await {
            Ok(result) => self.settle(result),
            Err(_) => Err(round_trip_timed_out(sql, limit)),
        }
    }

    pub(super) async fn execute(
        &mut self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<u64, StoreError> {
        self.broken = true;
        let limit = self.round_trip_limit;
        let client = &mut self.client;
        let request = async { bind(sql, params).execute(client).await.map(|r| r.total()) };
        match tokio::time::timeout(limit, request).await {
            Ok(result) => self.settle(result),
            Err(_) => Err(round_trip_timed_out(sql, limit)),
        }
    }
}
