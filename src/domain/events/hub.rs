//! The event hub: one per server, shared by every watcher of the process.
//!
//! It *sweeps*: takes a fresh snapshot's xmin, reads the events of every watched tenant
//! with a transaction id between the previous sweep's xmin and this one (each tenant in its
//! own tenant transaction, under RLS), and broadcasts them as a [`Horizon`]. Watchers that
//! are caught up take their events from the horizon instead of reading PostgreSQL; a
//! watcher that is behind, or that the sweep did not cover, reads for itself.
//!
//! A sweep runs when a transaction that recorded events commits (this process signals it
//! directly; other replicas through Redis pub/sub), shortly after such a wake-up while
//! older transactions were still running, and every poll interval regardless: PostgreSQL
//! is the truth, and a lost wake-up only delays delivery.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Position, TenantSet};
use crate::cache::RedisCache;
use crate::config::EventsConfig;
use crate::db::events::{SnapshotBounds, StreamEvent, StreamQuery};
use crate::error::{Error, Reason, Result};
use crate::tenancy::{EventsCommitted, RequestContext, TenantContext, TenantDb};

/// The Redis channel on which replicas announce commits that recorded events.
const WAKE_CHANNEL: &str = "tenantd:events:committed";
/// Horizons a watcher may fall behind before it reads PostgreSQL for itself.
const HORIZON_BUFFER: usize = 64;
/// Events a sweep carries at most; past it the horizon says "read for yourselves".
const HORIZON_EVENT_LIMIT: i64 = 2_000;
/// Tenants a sweep or a catch-up reads at once.
pub(super) const READ_CONCURRENCY: usize = 4;
/// The first follow-up sweep after a wake-up, while older transactions still ran.
const FIRST_FOLLOW_UP: Duration = Duration::from_millis(5);

/// What one sweep found: every event of the `covered` tenants with a transaction id in
/// `[from, to)`, in stream order. Every transaction below `to` has ended.
#[derive(Debug)]
pub struct Horizon {
    /// Lower end of the transaction ids covered.
    pub from: i64,
    /// Upper end (exclusive): the sweep snapshot's xmin.
    pub to: i64,
    /// Whose events the sweep read.
    pub covered: TenantSet,
    /// The events, or `None` when there were too many to carry (watchers read them).
    pub events: Option<Vec<StreamEvent>>,
}

impl Horizon {
    /// Whether the horizon's events stand for everything `tenants` may see in its range.
    pub fn covers(&self, tenants: &TenantSet) -> bool {
        match (&self.covered, tenants) {
            (TenantSet::All, _) => true,
            (TenantSet::Only(_), TenantSet::All) => false,
            (TenantSet::Only(covered), TenantSet::Only(wanted)) => wanted.is_subset(covered),
        }
    }
}

/// The hub; see the module documentation.
pub struct EventHub {
    database: TenantDb,
    redis: RedisCache,
    config: EventsConfig,
    wake: Notify,
    publish: Notify,
    horizons: broadcast::Sender<Arc<Horizon>>,
    interests: Mutex<HashMap<u64, TenantSet>>,
    next_watcher: AtomicU64,
    stopping: CancellationToken,
    /// Where the event index begins (it never changes once migrated).
    event_index_start: std::sync::OnceLock<i64>,
}

/// A watcher's place at the hub; dropping it withdraws the watcher's interest.
pub struct Registration {
    hub: Arc<EventHub>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut interests) = self.hub.interests.lock() {
            interests.remove(&self.id);
        }
    }
}

impl EventHub {
    /// A hub reading through `database`, and waking the other replicas through `redis`.
    /// Call [`EventHub::run`] to start it.
    pub fn new(database: TenantDb, redis: RedisCache, config: EventsConfig) -> Arc<Self> {
        let (horizons, _) = broadcast::channel(HORIZON_BUFFER);
        let hub = Arc::new(Self {
            database,
            redis,
            config,
            wake: Notify::new(),
            publish: Notify::new(),
            horizons,
            interests: Mutex::default(),
            next_watcher: AtomicU64::new(0),
            stopping: CancellationToken::new(),
            event_index_start: std::sync::OnceLock::new(),
        });
        let weak: Weak<Self> = Arc::downgrade(&hub);
        let signal: EventsCommitted = Arc::new(move |_tenant_id| {
            if let Some(hub) = weak.upgrade() {
                hub.wake.notify_one();
                hub.publish.notify_one();
            }
        });
        hub.database.on_events_committed(signal);
        hub
    }

    /// The settings of the stream.
    pub fn config(&self) -> &EventsConfig {
        &self.config
    }

    /// Cancelled when the server shuts down: watchers end with WATCH_INTERRUPTED.
    pub(super) fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Registers a watcher of `tenants` and subscribes it to horizons, then asks for a sweep.
    pub(super) fn register(self: &Arc<Self>, tenants: TenantSet) -> (Registration, broadcast::Receiver<Arc<Horizon>>) {
        let id = self.next_watcher.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut interests) = self.interests.lock() {
            interests.insert(id, tenants);
        }
        let receiver = self.horizons.subscribe();
        self.wake.notify_one();
        (Registration { hub: self.clone(), id }, receiver)
    }

    /// The number of registered watchers.
    pub fn watchers(&self) -> usize {
        self.interests.lock().map(|interests| interests.len()).unwrap_or_default()
    }

    /// Whose events the registered watchers want; `None` with no watcher.
    fn interest(&self) -> Option<TenantSet> {
        let interests = self.interests.lock().ok()?;
        let mut union = BTreeSet::new();
        for tenants in interests.values() {
            match tenants {
                TenantSet::All => return Some(TenantSet::All),
                TenantSet::Only(tenants) => union.extend(tenants.iter().copied()),
            }
        }
        (!interests.is_empty()).then_some(TenantSet::Only(union))
    }

    /// Sweeps until `stop`, then ends every watcher. Also relays wake-ups to and from
    /// the other replicas through Redis.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let relay = tokio::spawn(self.clone().relay(stop.clone()));
        let mut from: Option<i64> = None;
        let mut follow_up: Option<Duration> = None;
        loop {
            let wait = follow_up.unwrap_or(self.config.poll_interval);
            let woken = tokio::select! {
                () = stop.cancelled() => break,
                () = self.wake.notified() => true,
                () = tokio::time::sleep(wait) => false,
            };
            let Some(covered) = self.interest() else {
                from = None;
                follow_up = None;
                continue;
            };
            match self.sweep(from, covered).await {
                Ok((horizon, bounds)) => {
                    from = Some(horizon.to);
                    // Transactions older than some just committed may still run: look
                    // again soon, then less and less often, until the poll takes over.
                    let in_flight = bounds.xmin < bounds.xmax;
                    follow_up = match (woken, follow_up) {
                        (true, _) if in_flight => Some(FIRST_FOLLOW_UP),
                        (false, Some(delay)) if in_flight && delay * 2 < self.config.poll_interval => Some(delay * 2),
                        _ => None,
                    };
                    let _ = self.horizons.send(Arc::new(horizon));
                }
                Err(error) => {
                    tracing::warn!(reason = error.reason().as_str(), "event sweep failed; retrying");
                    // The next sweep starts afresh: watchers see the gap and read for themselves.
                    from = None;
                    follow_up = None;
                }
            }
        }
        self.stopping.cancel();
        let _ = relay.await;
    }

    /// One sweep from `from` (the previous sweep's xmin) to a fresh xmin.
    async fn sweep(&self, from: Option<i64>, covered: TenantSet) -> Result<(Horizon, SnapshotBounds)> {
        let bounds = self.snapshot_bounds().await?;
        let to = bounds.xmin;
        let Some(from) = from.filter(|from| *from < to) else {
            let from = from.map_or(to, |from| from.min(to));
            return Ok((Horizon { from, to, covered, events: Some(Vec::new()) }, bounds));
        };
        let tenants = self.tenants_with_events(&covered, from, to).await?;
        let query = StreamQuery { after: (from, Uuid::nil()), below: to, ..StreamQuery::default() };
        let mut reads = futures_util::stream::iter(tenants)
            .map(|tenant_id| self.read(tenant_id, query.clone(), HORIZON_EVENT_LIMIT + 1))
            .buffer_unordered(READ_CONCURRENCY);
        let mut events = Vec::new();
        let mut complete = true;
        while let Some(rows) = reads.next().await {
            let rows = rows?;
            complete &= i64::try_from(rows.len()).unwrap_or(i64::MAX) <= HORIZON_EVENT_LIMIT
                && i64::try_from(events.len() + rows.len()).unwrap_or(i64::MAX) <= HORIZON_EVENT_LIMIT;
            if complete {
                events.extend(rows);
            }
        }
        events.sort_by_key(super::position_of);
        let events = complete.then_some(events);
        Ok((Horizon { from, to, covered, events }, bounds))
    }

    /// The bounds of a fresh snapshot.
    pub(super) async fn snapshot_bounds(&self) -> Result<SnapshotBounds> {
        self.database.global(async |connection| Ok(crate::db::events::snapshot_bounds(connection).await?)).await
    }

    /// The tenants of a set: for every tenant, the registry's list.
    pub(super) async fn tenant_ids(&self, tenants: &TenantSet) -> Result<Vec<Uuid>> {
        match tenants {
            TenantSet::Only(tenants) => Ok(tenants.iter().copied().collect()),
            TenantSet::All => {
                self.database.global(async |connection| Ok(crate::db::events::tenant_ids(connection).await?)).await
            }
        }
    }

    /// The tenants of a set that may have events of transactions in `[from, below)`: those
    /// the event index names, or every tenant of the set when `from` is older than the
    /// index. A sweep or a catch-up reads only these, so its cost follows the tenants that
    /// wrote, not the number of tenants.
    pub(super) async fn tenants_with_events(&self, tenants: &TenantSet, from: i64, below: i64) -> Result<Vec<Uuid>> {
        if from >= below {
            return Ok(Vec::new());
        }
        let start = match self.event_index_start.get() {
            Some(start) => *start,
            None => {
                let start = self
                    .database
                    .global(async |connection| Ok(crate::db::events::event_index_start(connection).await?))
                    .await?;
                *self.event_index_start.get_or_init(|| start)
            }
        };
        if from < start {
            return self.tenant_ids(tenants).await;
        }
        let written = self
            .database
            .global(async |connection| Ok(crate::db::events::tenants_with_events(connection, from, below).await?))
            .await?;
        Ok(written.into_iter().filter(|tenant_id| tenants.contains(*tenant_id)).collect())
    }

    /// Fails with TENANT_NOT_FOUND (naming the first unknown id) unless every tenant of the
    /// set is in the registry, in any state: a watch of a tenant that does not exist would
    /// silently receive nothing.
    pub(super) async fn require_tenants(&self, tenants: &TenantSet) -> Result<()> {
        let TenantSet::Only(tenants) = tenants else { return Ok(()) };
        let wanted: Vec<Uuid> = tenants.iter().copied().collect();
        let known = self
            .database
            .global(async |connection| Ok(crate::db::events::known_tenants(connection, &wanted).await?))
            .await?;
        match wanted.iter().find(|id| !known.contains(id)) {
            Some(unknown) => Err(Error::new(Reason::TenantNotFound).with_metadata("tenant_id", unknown.to_string())),
            None => Ok(()),
        }
    }

    /// One tenant's events of `query`, read in that tenant's transaction.
    pub(super) async fn read(&self, tenant_id: Uuid, query: StreamQuery, limit: i64) -> Result<Vec<StreamEvent>> {
        let context = TenantContext::new(tenant_id, RequestContext::system());
        self.database
            .read(&context, async move |read| Ok(crate::db::events::after(read, query.clone(), limit).await?))
            .await
    }

    /// The first position at or after `since` among `tenants`' events, if any.
    pub(super) async fn first_since(
        &self,
        tenants: &TenantSet,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Position>> {
        let mut first: Option<i64> = None;
        for tenant_id in self.tenant_ids(tenants).await? {
            let context = TenantContext::new(tenant_id, RequestContext::system());
            let found = self
                .database
                .read(&context, async move |read| Ok(crate::db::events::first_since(read, since).await?))
                .await?;
            first = match (first, found) {
                (Some(first), Some(found)) => Some(first.min(found)),
                (first, found) => first.or(found),
            };
        }
        Ok(first.map(Position::before_transaction))
    }

    /// Tells the other replicas about local commits (coalesced: one message per burst), and
    /// wakes this hub on theirs. Without Redis, the periodic poll still finds everything.
    async fn relay(self: Arc<Self>, stop: CancellationToken) {
        let announce = {
            let hub = self.clone();
            let stop = stop.clone();
            async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = hub.publish.notified() => hub.redis.publish(WAKE_CHANNEL, "1").await,
                    }
                }
            }
        };
        let listen = async {
            loop {
                if let Some(mut messages) = self.redis.subscribe(WAKE_CHANNEL).await {
                    // Commits may have been announced while unsubscribed.
                    self.wake.notify_one();
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            message = messages.next() => match message {
                                Some(_) => self.wake.notify_one(),
                                None => break,
                            },
                        }
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        };
        tokio::join!(announce, listen);
    }
}
