//! `last_used_time` of API keys, tracked outside the request's transaction: requests note
//! the use in memory (no I/O), and a background task writes the notes in batches, one
//! transaction per tenant. A failed flush is logged and retried with the next batch; it
//! never slows or fails a request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db;
use crate::tenancy::{RequestContext, TenantContext, TenantDb};

/// Pending key uses, flushed in batches.
#[derive(Default)]
pub struct KeyUseRecorder {
    pending: Mutex<HashMap<(Uuid, Uuid), DateTime<Utc>>>,
}

impl KeyUseRecorder {
    /// Notes that a tenant's key was used now.
    pub fn record(&self, tenant_id: Uuid, key_id: Uuid) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert((tenant_id, key_id), Utc::now());
        }
    }

    /// The (tenant, key) pairs whose use is noted and not written yet.
    #[cfg(test)]
    pub(crate) fn pending_uses(&self) -> Vec<(Uuid, Uuid)> {
        self.pending.lock().map(|pending| pending.keys().copied().collect()).unwrap_or_default()
    }

    /// Writes every pending use; uses that fail to write are kept for the next flush.
    pub async fn flush(&self, database: &TenantDb) {
        let batch = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return,
        };
        let mut by_tenant: HashMap<Uuid, Vec<(Uuid, DateTime<Utc>)>> = HashMap::new();
        for ((tenant_id, key_id), used) in batch {
            by_tenant.entry(tenant_id).or_default().push((key_id, used));
        }
        for (tenant_id, uses) in by_tenant {
            let context = TenantContext::new(tenant_id, RequestContext::system());
            let retry = uses.clone();
            let written = database
                .run(&context, async move |transaction| {
                    for (key_id, used) in uses {
                        db::api_keys::touch(transaction, key_id, used).await?;
                    }
                    Ok(())
                })
                .await;
            if let Err(error) = written {
                tracing::warn!(tenant.id = %tenant_id, error = ?error.reason(), "could not record api key use; will retry");
                if let Ok(mut pending) = self.pending.lock() {
                    for (key_id, used) in retry {
                        pending.entry((tenant_id, key_id)).or_insert(used);
                    }
                }
            }
        }
    }

    /// Flushes every `interval` until `stop` is cancelled, then once more.
    pub async fn run(&self, database: TenantDb, interval: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => self.flush(&database).await,
                () = stop.cancelled() => break,
            }
        }
        self.flush(&database).await;
    }
}
