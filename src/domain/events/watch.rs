//! One WatchEvents stream: a task that feeds a bounded buffer, from the hub's horizons
//! when it is caught up and from PostgreSQL when it is behind.
//!
//! Memory is bounded per watcher: at most `watcher_buffer` messages of at most
//! [`BATCH_SIZE`] events wait for the client. When the buffer stays full for
//! `slow_watcher_timeout`, the stream ends with RESOURCE_EXHAUSTED `WATCHER_TOO_SLOW`
//! after the buffered messages, with the cursor after the last of them. When the client
//! goes away (cancel, deadline, disconnect) the buffer's receiver is dropped and the task
//! ends at its next step, releasing its registration and everything it held.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::stream::{BoxStream, StreamExt};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

use super::hub::{Horizon, READ_CONCURRENCY, Registration};
use super::{Cursor, EventBatch, EventFilter, EventHub, Position, Start, TenantSet, WatchRequest, ending, position_of};
use crate::db::events::{StreamEvent, StreamQuery};
use crate::error::{Error, Reason, Result};
use crate::tenancy::Readmission;

/// Events per message at most.
pub const BATCH_SIZE: usize = 100;
/// Events read per tenant and step when catching up.
const PAGE_SIZE: i64 = 500;
/// An idle stream gets a bookmark (a message without events) this often.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);
/// How often a stream checks that its credential still admits it (through the resolver's
/// caches, which invalidations evict within milliseconds).
pub const READMISSION_INTERVAL: Duration = Duration::from_millis(250);

/// The messages of one stream; ends with the error that ended the watch, if any.
pub type EventStream = BoxStream<'static, Result<EventBatch>>;

/// Validates where `request` starts, registers the watcher and starts its task. Errors
/// about the request (a tenant that does not exist, a cursor from the future, a start
/// beyond retention) are returned here, before the stream starts. While the stream runs,
/// `readmission` (if any) is checked every [`READMISSION_INTERVAL`]; when it fails, the
/// stream ends with its error and a resume cursor.
pub async fn open(
    hub: &Arc<EventHub>,
    request: WatchRequest,
    deadline: Option<Instant>,
    readmission: Option<Readmission>,
) -> Result<EventStream> {
    let config = hub.config().clone();
    let oldest = Utc::now() - chrono::Duration::from_std(config.retention).unwrap_or(chrono::TimeDelta::MAX);
    let beyond_retention = || Error::new(Reason::EventRetentionExceeded);
    hub.require_tenants(&request.tenants).await?;
    let bounds = hub.snapshot_bounds().await?;
    let now = Position::before_transaction(bounds.xmin);
    let position = match request.start {
        Start::Now => now,
        Start::After(cursor) => {
            if cursor.time < oldest {
                return Err(beyond_retention());
            }
            if cursor.position.transaction_id > bounds.xmax {
                return Err(Error::invalid(Reason::EventCursorInvalid, "cursor", "is ahead of the event stream"));
            }
            cursor.position
        }
        Start::Since(time) => {
            if time < oldest {
                return Err(beyond_retention());
            }
            // Events of transactions still running at the start may be created at or
            // after `time` too: never start later than now.
            hub.first_since(&request.tenants, time).await?.map_or(now, |first| first.min(now))
        }
    };
    let (registration, horizons) = hub.register(request.tenants.clone());
    let (sender, receiver) = mpsc::channel(config.watcher_buffer);
    let (end_sender, end_receiver) = oneshot::channel();
    let watcher = Watcher {
        hub: hub.clone(),
        _registration: registration,
        tenants: request.tenants,
        filter: request.filter,
        position,
        sender,
        slow_after: config.slow_watcher_timeout,
        last_sent: Instant::now(),
        deadline,
        caught_up: false,
        caught_up_at: bounds.xmax,
        readmission,
        readmit_at: Instant::now() + READMISSION_INTERVAL,
    };
    tokio::spawn(async move {
        if let Err(error) = watcher.run(horizons).await {
            let _ = end_sender.send(error);
        }
    });
    let messages = tokio_stream::wrappers::ReceiverStream::new(receiver).map(Ok);
    let end = futures_util::stream::once(end_receiver).filter_map(|ended| async move { ended.ok().map(Err) });
    Ok(messages.chain(end).boxed())
}

/// Reads one page of a tenant, retrying a busy or briefly unreachable database (the pool
/// shared with requests may be exhausted for a moment) for about 5 s before giving up.
async fn read_retrying(hub: &EventHub, tenant_id: Uuid, query: StreamQuery) -> Result<Vec<StreamEvent>> {
    let mut delay = Duration::from_millis(100);
    loop {
        match hub.read(tenant_id, query.clone(), PAGE_SIZE).await {
            Err(error) if error.code() == tonic::Code::Unavailable && delay < Duration::from_secs(3) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            outcome => return outcome,
        }
    }
}

struct Watcher {
    hub: Arc<EventHub>,
    _registration: Registration,
    tenants: TenantSet,
    filter: EventFilter,
    /// Everything at or before it is in the buffer, or was filtered out.
    position: Position,
    sender: mpsc::Sender<EventBatch>,
    slow_after: Duration,
    last_sent: Instant,
    deadline: Option<Instant>,
    caught_up: bool,
    /// The open snapshot's xmax: every transaction that had committed when the stream
    /// opened is below it, so the stream has caught up once its position reaches it.
    caught_up_at: i64,
    readmission: Option<Readmission>,
    /// When the credential is checked next.
    readmit_at: Instant,
}

impl Watcher {
    async fn run(mut self, mut horizons: broadcast::Receiver<Arc<Horizon>>) -> Result<()> {
        let deadline = self.deadline;
        let work = async {
            self.send(Vec::new(), self.position).await?;
            self.follow(&mut horizons).await
        };
        let Some(deadline) = deadline else { return work.await };
        let outcome = tokio::select! {
            outcome = work => Some(outcome),
            () = tokio::time::sleep_until(deadline) => None,
        };
        outcome.unwrap_or_else(|| Err(ending(Reason::WatchDeadlineExceeded, self.cursor())))
    }

    async fn follow(&mut self, horizons: &mut broadcast::Receiver<Arc<Horizon>>) -> Result<()> {
        loop {
            let bookmark_due = self.last_sent + BOOKMARK_INTERVAL;
            let readmit_at = self.readmit_at;
            tokio::select! {
                () = self.sender.closed() => return Ok(()),
                () = tokio::time::sleep_until(readmit_at), if self.readmission.is_some() => self.readmit().await?,
                () = self.hub.stopping().cancelled() => return Err(ending(Reason::WatchInterrupted, self.cursor())),
                // Idle bookmarks only once caught up: before that, a message without events
                // is the caught-up signal.
                () = tokio::time::sleep_until(bookmark_due), if self.caught_up => {
                    self.send(Vec::new(), self.position).await?;
                }
                horizon = horizons.recv() => match horizon {
                    Ok(horizon) => {
                        self.apply(&horizon).await?;
                        if !self.caught_up && self.position.transaction_id >= self.caught_up_at {
                            // Say once that the stream has caught up: a message without events
                            // after everything committed before the stream opened was delivered
                            // (a transaction still running elsewhere in the cluster may delay it).
                            self.caught_up = true;
                            self.send(Vec::new(), self.position).await?;
                        }
                    }
                    // Horizons were missed: the next one shows a gap, and is read for.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(ending(Reason::WatchInterrupted, self.cursor()));
                    }
                },
            }
        }
    }

    /// The cursor of the current position.
    fn cursor(&self) -> Cursor {
        Cursor { position: self.position, time: Utc::now() }
    }

    /// Delivers what a horizon adds after the current position.
    async fn apply(&mut self, horizon: &Horizon) -> Result<()> {
        if horizon.to <= self.position.transaction_id {
            return Ok(());
        }
        let end = Position::before_transaction(horizon.to);
        match &horizon.events {
            Some(events) if horizon.from <= self.position.transaction_id && horizon.covers(&self.tenants) => {
                let matched: Vec<StreamEvent> = events
                    .iter()
                    .filter(|event| {
                        position_of(event) > self.position
                            && self.tenants.contains(event.event.tenant_id)
                            && self.filter.matches(event)
                    })
                    .cloned()
                    .collect();
                self.deliver(matched, end).await
            }
            _ => self.catch_up(horizon.to).await,
        }
    }

    /// Reads and delivers every event of the watched tenants after the position and below
    /// `to` (an xmin: the events there are final), page by page, in stream order.
    async fn catch_up(&mut self, to: i64) -> Result<()> {
        let end = Position::before_transaction(to);
        let mut pending = self
            .hub
            .tenants_with_events(&self.tenants, self.position.transaction_id, to)
            .await
            .map_err(|error| self.resumable(error))?;
        while !pending.is_empty() {
            let query = StreamQuery {
                after: (self.position.transaction_id, self.position.id),
                below: to,
                event_types: self.filter.event_types.clone(),
                resource_types: self.filter.resource_types.clone(),
            };
            let hub = &self.hub;
            let pages: Vec<(Uuid, Vec<StreamEvent>)> = futures_util::stream::iter(pending)
                .map(|tenant_id| {
                    let query = query.clone();
                    async move { read_retrying(hub, tenant_id, query).await.map(|rows| (tenant_id, rows)) }
                })
                .buffer_unordered(READ_CONCURRENCY)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_>>()
                .map_err(|error| self.resumable(error))?;
            let page_length = usize::try_from(PAGE_SIZE).unwrap_or(usize::MAX);
            // Below the last row of every full page, nothing is missing from any tenant.
            let watermark = pages
                .iter()
                .filter(|(_, rows)| rows.len() >= page_length)
                .filter_map(|(_, rows)| rows.last().map(position_of))
                .min()
                .unwrap_or(end);
            let mut ready = Vec::new();
            pending = Vec::new();
            for (tenant_id, rows) in pages {
                let (read, full) = (rows.len(), rows.len() >= page_length);
                let before = ready.len();
                ready.extend(rows.into_iter().filter(|row| position_of(row) <= watermark));
                // A tenant is done once a page was not full and all of it was delivered.
                if full || ready.len() - before < read {
                    pending.push(tenant_id);
                }
            }
            ready.sort_by_key(position_of);
            self.deliver(ready, watermark).await?;
        }
        self.position = self.position.max(end);
        Ok(())
    }

    /// Sends `events` (in stream order) in messages of at most [`BATCH_SIZE`]; the last
    /// message's cursor is `end`. Advances the position after each message is buffered.
    async fn deliver(&mut self, events: Vec<StreamEvent>, end: Position) -> Result<()> {
        if events.is_empty() {
            self.position = self.position.max(end);
            return Ok(());
        }
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let batch: Vec<StreamEvent> = events.by_ref().take(BATCH_SIZE).collect();
            let after = if events.peek().is_some() { batch.last().map_or(end, position_of) } else { end };
            self.send(batch, after).await?;
        }
        Ok(())
    }

    /// Ends the stream, with a resume cursor, once its credential no longer admits it.
    async fn readmit(&mut self) -> Result<()> {
        let Some(readmission) = &self.readmission else { return Ok(()) };
        if Instant::now() < self.readmit_at {
            return Ok(());
        }
        self.readmit_at = Instant::now() + READMISSION_INTERVAL;
        readmission.check().await.map_err(|error| self.resumable(error))
    }

    /// Buffers one message whose cursor is `after`, waiting at most `slow_after` for room;
    /// first, when due, checks that the credential still admits the stream.
    async fn send(&mut self, events: Vec<StreamEvent>, after: Position) -> Result<()> {
        self.readmit().await?;
        let cursor = Cursor { position: after, time: Utc::now() };
        match self.sender.send_timeout(EventBatch { events, cursor }, self.slow_after).await {
            Ok(()) => {
                self.position = self.position.max(after);
                self.last_sent = Instant::now();
                Ok(())
            }
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(ending(Reason::WatcherTooSlow, self.cursor())),
            // The client is gone: end quietly.
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(ending(Reason::WatchInterrupted, self.cursor())),
        }
    }

    /// A failure while reading, with the cursor to resume from.
    fn resumable(&self, error: Error) -> Error {
        error.with_metadata("resume_cursor", self.cursor().encode())
    }
}
