//! Bounded retries of idempotent reads.
//!
//! A read that failed because its connection was lost (PostgreSQL restarted, a network
//! blip, a connection the pool had kept after the server closed it) is tried again on a
//! fresh connection, a few times, with short backoff. Writes are never retried here: a
//! write whose outcome is unknown is the client's to retry, with a `request_id` where the
//! API offers one. Waiting for a pooled connection timed out is not retried either: the
//! request already waited as long as it may.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Reason, Result};

/// Delays before the second and third attempts.
const BACKOFF: [Duration; 2] = [Duration::from_millis(20), Duration::from_millis(80)];

/// Runs `read`, retrying it when it fails with a lost database connection.
pub async fn read<T, F, Fut>(mut read: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut delays = BACKOFF.iter();
    loop {
        match read().await {
            Err(error) if is_transient(&error) => match delays.next() {
                Some(delay) => {
                    tracing::debug!(reason = error.reason().as_str(), "retrying a read after a lost connection");
                    tokio::time::sleep(*delay).await;
                }
                None => return Err(error),
            },
            outcome => return outcome,
        }
    }
}

fn is_transient(error: &Error) -> bool {
    error.reason() == Reason::DatabaseUnavailable
}
