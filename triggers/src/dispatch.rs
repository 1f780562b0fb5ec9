//! The delivery worker: one task takes due entries from every outbox it was
//! given, attempts them (several at once), and records each outcome in the
//! outbox before anything else: retry at a later time (exponential backoff
//! with jitter), delivered, or given up. The task runs on the process's
//! runtime ([`Dispatcher::spawn`]: `driftwatch run`), or on a thread of its
//! own with a runtime of its own where the process has none
//! ([`Dispatcher::start`]: a replay, the demo).
//!
//! Pipelines never wait for a receiver; the worker never touches their
//! state. What it learns reaches the `alerts` table through the outbox
//! ([`crate::Triggers::tick`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::RngExt;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use crate::actions::{Attempt, attempt};
use crate::audit::Audit;
use crate::config::Actions;
use crate::error::{Error, Result, io};
use crate::key::Clock;
use crate::outbox::{Entry, Outbox, Outcome};

/// Counters of the deliveries since the worker started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryStats {
    /// Attempts made.
    pub attempts: u64,
    /// Notifications delivered.
    pub delivered: u64,
    /// Attempts that failed and will be made again.
    pub retried: u64,
    /// Notifications given up.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    attempts: AtomicU64,
    delivered: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
}

struct Shared {
    actions: Actions,
    outboxes: Mutex<Vec<Arc<Outbox>>>,
    audit: Arc<Audit>,
    clock: Clock,
    stop: CancellationToken,
    wake: tokio::sync::Notify,
    counters: Counters,
}

/// The delivery worker.
pub struct Dispatcher {
    shared: Arc<Shared>,
    worker: Mutex<Option<Worker>>,
}

/// Where the worker runs, to wait for its end.
enum Worker {
    /// A thread of its own.
    Thread(JoinHandle<()>),
    /// A task on a runtime it was given: disconnected when the task ends
    /// (or the runtime drops it).
    Task(std::sync::mpsc::Receiver<()>),
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Entries attempted at once per outbox.
const BATCH: usize = 32;

/// Longest sleep between looks at the outboxes.
const IDLE: Duration = Duration::from_secs(1);

fn shared(actions: Actions, audit: Arc<Audit>, clock: Clock) -> Arc<Shared> {
    Arc::new(Shared {
        actions,
        outboxes: Mutex::new(Vec::new()),
        audit,
        clock,
        stop: CancellationToken::new(),
        wake: tokio::sync::Notify::new(),
        counters: Counters::default(),
    })
}

impl Dispatcher {
    /// Starts the worker for `actions` on a thread of its own
    /// (`driftwatch-deliver`), with a runtime of its own: for a process
    /// that has no runtime.
    pub fn start(actions: Actions, audit: Arc<Audit>, clock: Clock) -> Result<Self> {
        let shared = shared(actions, audit, clock);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("starting the delivery runtime"))?;
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("driftwatch-deliver".into())
            .spawn(move || runtime.block_on(run(worker)))
            .map_err(io("starting the delivery thread"))?;
        Ok(Dispatcher {
            shared,
            worker: Mutex::new(Some(Worker::Thread(thread))),
        })
    }

    /// Starts the worker for `actions` as a task (its logs in the span
    /// `deliver`) on `runtime`, the process's. [`stop`](Self::stop) ends it
    /// and waits for it from outside the runtime; the process's
    /// cancellation token does not, so that a shutdown can still deliver
    /// what the sources left in their outboxes
    /// ([`drain`](Self::drain)) before it stops the worker.
    pub fn spawn(
        actions: Actions,
        audit: Arc<Audit>,
        clock: Clock,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let shared = shared(actions, audit, clock);
        let (ended, end) = std::sync::mpsc::channel::<()>();
        let worker = shared.clone();
        runtime.spawn(
            async move {
                run(worker).await;
                drop(ended);
            }
            .instrument(tracing::info_span!("deliver")),
        );
        Dispatcher {
            shared,
            worker: Mutex::new(Some(Worker::Task(end))),
        }
    }

    /// Delivers the entries of `outbox` too (those left by an earlier run first).
    pub fn add(&self, outbox: Arc<Outbox>) {
        let mut list = self.lock();
        if !list.iter().any(|o| o.path() == outbox.path()) {
            list.push(outbox);
        }
        drop(list);
        self.wake();
    }

    /// Stops delivering the entries of the outbox in `path` (a partition
    /// handed to another instance).
    pub fn remove(&self, path: &Path) {
        self.lock().retain(|o| o.path() != path);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Outbox>>> {
        self.shared
            .outboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Looks at the outboxes now (new entries were written).
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// A waker for pipelines.
    pub fn waker(&self) -> Arc<dyn Fn() + Send + Sync> {
        let shared = self.shared.clone();
        Arc::new(move || shared.wake.notify_one())
    }

    /// Counters so far.
    pub fn stats(&self) -> DeliveryStats {
        let c = &self.shared.counters;
        DeliveryStats {
            attempts: c.attempts.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }

    /// Notifications waiting in the outboxes (not delivered, not given up).
    pub fn pending(&self) -> Result<u64> {
        let outboxes = self.lock().clone();
        let mut pending = 0;
        for o in &outboxes {
            pending += o.pending_len()?;
        }
        Ok(pending)
    }

    /// Waits until no outbox holds a pending entry, at most `limit`;
    /// returns how many are still pending.
    pub fn drain(&self, limit: Duration) -> Result<u64> {
        let deadline = Instant::now() + limit;
        loop {
            let pending = self.pending()?;
            if pending == 0 || Instant::now() >= deadline {
                return Ok(pending);
            }
            self.wake();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the worker after the attempts under way, and waits for it.
    /// Not to be called from a task of the runtime a spawned worker runs
    /// on (it would wait on the thread the worker needs).
    pub fn stop(&self) -> Result<()> {
        self.shared.stop.cancel();
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        match worker {
            Some(Worker::Thread(h)) => h.join().map_err(|_| Error::State {
                context: "the delivery thread".into(),
                message: "it panicked".into(),
            }),
            Some(Worker::Task(end)) => {
                // disconnected when the task ends, whether or not it panicked
                let _ = end.recv();
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        // a task is only told to stop: the last handle may be dropped on
        // its runtime, where waiting for it could hold up the thread it needs
        let worker = self.worker.get_mut().unwrap_or_else(|p| p.into_inner());
        if matches!(worker, Some(Worker::Task(_))) {
            self.shared.stop.cancel();
        } else {
            let _ = self.stop();
        }
    }
}

async fn run(shared: Arc<Shared>) {
    // redirects are not followed: a receiver that answers 3xx to another
    // host would get the secret headers and the signature
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!("no HTTP client, webhooks cannot be delivered: {e}");
            return;
        }
    };
    while !shared.stop.is_cancelled() {
        let outboxes = shared
            .outboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let now = (shared.clock)();
        let mut work = Vec::new();
        for o in &outboxes {
            match o.due(now, BATCH) {
                Ok(entries) => work.extend(entries.into_iter().map(|e| (o.clone(), e))),
                Err(e) => warn!("reading the outbox: {e}"),
            }
        }
        if !work.is_empty() {
            let attempts = work
                .into_iter()
                .map(|(o, e)| deliver(&shared, &client, o, e));
            futures::future::join_all(attempts).await;
            continue;
        }
        let next = outboxes
            .iter()
            .filter_map(|o| o.next_due().ok().flatten())
            .min();
        let wait = next.map_or(IDLE, |t| {
            Duration::from_millis((t - now).clamp(1, IDLE.as_millis() as i64) as u64)
        });
        tokio::select! {
            () = shared.wake.notified() => {}
            () = shared.stop.cancelled() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn deliver(shared: &Shared, client: &reqwest::Client, outbox: Arc<Outbox>, mut entry: Entry) {
    let key = entry.notification.key.clone();
    let name = entry.notification.action.clone();
    let c = &shared.counters;
    let clock = &shared.clock;
    let result = match shared.actions.get(&name) {
        Some(action) => {
            c.attempts.fetch_add(1, Ordering::Relaxed);
            entry.attempts += 1;
            let result = attempt(client, action, &entry.notification, clock()).await;
            Some((action.retry.clone(), result))
        }
        None => None,
    };
    let now = clock();
    let audit = |event: &str, fields: serde_json::Value| {
        if let Err(e) = shared.audit.write(clock, event, fields) {
            warn!("audit log: {e}");
        }
    };
    match result {
        Some((
            _,
            Attempt::Delivered {
                status,
                job_id,
                model_version,
            },
        )) => {
            entry.outcome = Outcome::Delivered;
            entry.finished_at = Some(now);
            entry.detail = status.clone();
            entry.job_id = job_id.clone();
            entry.model_version = model_version.clone();
            c.delivered.fetch_add(1, Ordering::Relaxed);
            info!(action = %name, key = %key, attempts = entry.attempts, job_id = job_id.as_deref().unwrap_or("-"), "notification delivered");
            audit(
                "delivered",
                json!({ "key": key, "action": name, "attempts": entry.attempts, "status": status, "job_id": job_id, "alerts": entry.notification.alert_refs() }),
            );
        }
        Some((retry, Attempt::Retry(error))) if entry.attempts < retry.max_attempts => {
            let wait = retry.wait_after(entry.attempts, rand::rng().random::<f64>());
            entry.next_attempt = now + wait.as_millis() as i64;
            entry.detail = Some(error.clone());
            c.retried.fetch_add(1, Ordering::Relaxed);
            warn!(action = %name, key = %key, attempt = entry.attempts, retry_in_ms = wait.as_millis() as u64, "delivery failed, will retry: {error}");
            audit(
                "attempt_failed",
                json!({ "key": key, "action": name, "attempt": entry.attempts, "error": error, "retry_in_ms": wait.as_millis() as u64 }),
            );
        }
        other => {
            let error = match other {
                Some((_, Attempt::Retry(e))) => {
                    format!("gave up after {} attempts: {e}", entry.attempts)
                }
                Some((_, Attempt::Refused(e))) => format!("refused: {e}"),
                _ => format!("action {name} is no longer configured"),
            };
            entry.outcome = Outcome::Failed;
            entry.finished_at = Some(now);
            entry.detail = Some(error.clone());
            c.failed.fetch_add(1, Ordering::Relaxed);
            warn!(action = %name, key = %key, attempts = entry.attempts, "notification failed: {error}");
            audit(
                "failed",
                json!({ "key": key, "action": name, "attempts": entry.attempts, "error": error, "alerts": entry.notification.alert_refs() }),
            );
        }
    }
    if let Err(e) = outbox.record(&entry) {
        // the entry stays pending as it was: it is attempted again
        warn!(action = %name, key = %key, "recording a delivery in the outbox: {e}");
    }
}
