//! The delivery worker: one thread with its own async runtime takes due
//! entries from every outbox it was given, attempts them (several at once),
//! and records each outcome in the outbox before anything else: retry at a
//! later time (exponential backoff with jitter), delivered, or given up.
//!
//! Pipelines never wait for a receiver; the worker never touches their
//! state. What it learns reaches the `alerts` table through the outbox
//! ([`crate::Triggers::tick`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::RngExt;
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

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
    stop: AtomicBool,
    wake: tokio::sync::Notify,
    counters: Counters,
}

/// The delivery worker.
pub struct Dispatcher {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
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

impl Dispatcher {
    /// Starts the worker for `actions`.
    pub fn start(actions: Actions, audit: Arc<Audit>, clock: Clock) -> Result<Self> {
        let shared = Arc::new(Shared {
            actions,
            outboxes: Mutex::new(Vec::new()),
            audit,
            clock,
            stop: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            counters: Counters::default(),
        });
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
            thread: Mutex::new(Some(thread)),
        })
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

    /// Stops the worker after the attempts under way.
    pub fn stop(&self) -> Result<()> {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.wake();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle
            && h.join().is_err()
        {
            return Err(Error::State {
                context: "the delivery thread".into(),
                message: "it panicked".into(),
            });
        }
        Ok(())
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        let _ = self.stop();
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
    while !shared.stop.load(Ordering::SeqCst) {
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
