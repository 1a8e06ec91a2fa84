//! The work queue: keys (`namespace/name`) waiting to be reconciled. A key is queued at most once however often it
//! is added; a key being worked on that is added again is worked on again once, after the current run (level
//! triggered: the next run reads the newest state). Failed keys come back with per-key exponential backoff; keys can
//! also be scheduled for later (`Action::requeue`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Backoff for failed keys: `base * 2^failures`, capped at `max` (client-go's defaults: 5 ms and 1000 s).
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_secs(1000),
        }
    }
}

impl Backoff {
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u64.checked_shl(failures.min(40)).unwrap_or(u64::MAX);
        let nanos = (self.base.as_nanos() as u64).saturating_mul(factor);
        Duration::from_nanos(nanos).min(self.max)
    }
}

#[derive(Default)]
struct State {
    ready: VecDeque<String>,
    queued: HashSet<String>,
    processing: HashSet<String>,
    /// Added while processing: queue again when done.
    dirty: HashSet<String>,
    /// Keys due later, by time.
    later: BTreeMap<(Instant, u64), String>,
    seq: u64,
    failures: HashMap<String, u32>,
    closed: bool,
    /// Keys queued (not counting adds of a key already queued), and keys put back after a failure.
    adds: u64,
    retries: u64,
}

/// Every named queue of this process, for its `/metrics` (observation only: nothing acts on what it holds).
static NAMED: Mutex<Vec<(String, Weak<Mutex<State>>)>> = Mutex::new(Vec::new());

/// One queue's numbers, named as Kubernetes names its work-queue metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub name: String,
    /// Keys ready to be worked on (`workqueue_depth`).
    pub depth: usize,
    /// Keys being worked on now.
    pub processing: usize,
    /// Keys scheduled for later (requeues and backoffs).
    pub delayed: usize,
    /// Keys whose last run failed (waiting on their backoff).
    pub failing: usize,
    /// `workqueue_adds_total`.
    pub adds: u64,
    /// `workqueue_retries_total`.
    pub retries: u64,
}

/// The numbers of every named queue alive in this process, by name (queues of one name summed).
pub fn stats() -> Vec<QueueStats> {
    let mut named = NAMED.lock().unwrap_or_else(|e| e.into_inner());
    named.retain(|(_, q)| q.strong_count() > 0);
    let mut by_name: BTreeMap<String, QueueStats> = BTreeMap::new();
    for (name, q) in named.iter() {
        let Some(q) = q.upgrade() else { continue };
        let s = q.lock().unwrap_or_else(|e| e.into_inner());
        let e = by_name.entry(name.clone()).or_insert_with(|| QueueStats {
            name: name.clone(),
            ..Default::default()
        });
        e.depth += s.ready.len();
        e.processing += s.processing.len();
        e.delayed += s.later.len();
        e.failing += s.failures.len();
        e.adds += s.adds;
        e.retries += s.retries;
    }
    by_name.into_values().collect()
}

/// [`stats`] in Prometheus' text format, with Kubernetes' metric names where it has them
/// (`workqueue_depth`, `workqueue_adds_total`, `workqueue_retries_total`) and Capstan's for the rest.
pub fn prometheus() -> String {
    let stats = stats();
    let mut out = String::new();
    type Series = (
        &'static str,
        &'static str,
        &'static str,
        fn(&QueueStats) -> u64,
    );
    let series: [Series; 6] = [
        (
            "workqueue_depth",
            "gauge",
            "Keys ready to be worked on.",
            |q| q.depth as u64,
        ),
        ("workqueue_adds_total", "counter", "Keys queued.", |q| {
            q.adds
        }),
        (
            "workqueue_retries_total",
            "counter",
            "Keys queued again after a failure.",
            |q| q.retries,
        ),
        (
            "capstan_workqueue_processing",
            "gauge",
            "Keys being worked on.",
            |q| q.processing as u64,
        ),
        (
            "capstan_workqueue_delayed",
            "gauge",
            "Keys scheduled for later.",
            |q| q.delayed as u64,
        ),
        (
            "capstan_workqueue_failing",
            "gauge",
            "Keys whose last run failed.",
            |q| q.failing as u64,
        ),
    ];
    for (metric, kind, help, value) in series {
        out.push_str(&format!("# HELP {metric} {help}\n# TYPE {metric} {kind}\n"));
        for q in &stats {
            out.push_str(&format!("{metric}{{name=\"{}\"}} {}\n", q.name, value(q)));
        }
    }
    out
}

/// A de-duplicating, rate-limited work queue. Cloning shares the queue.
#[derive(Clone)]
pub struct WorkQueue {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
    backoff: Backoff,
}

impl WorkQueue {
    pub fn new(backoff: Backoff) -> Self {
        WorkQueue {
            state: Arc::default(),
            notify: Arc::new(Notify::new()),
            backoff,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a key now (no-op when already queued; deferred when being processed).
    pub fn add(&self, key: &str) {
        let mut s = self.lock();
        if s.closed || s.queued.contains(key) {
            return;
        }
        if s.processing.contains(key) {
            s.dirty.insert(key.to_string());
            return;
        }
        s.queued.insert(key.to_string());
        s.ready.push_back(key.to_string());
        s.adds += 1;
        drop(s);
        self.notify.notify_one();
    }

    /// Lists the queue under `name` in this process's work-queue metrics ([`stats`]).
    pub fn register(&self, name: &str) {
        let mut named = NAMED.lock().unwrap_or_else(|e| e.into_inner());
        named.retain(|(_, q)| q.strong_count() > 0);
        named.push((name.to_string(), Arc::downgrade(&self.state)));
    }

    /// Queues a key after `delay`.
    pub fn add_after(&self, key: &str, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let mut s = self.lock();
        if s.closed {
            return;
        }
        s.seq += 1;
        let seq = s.seq;
        s.later
            .insert((Instant::now() + delay, seq), key.to_string());
        drop(s);
        self.notify.notify_one();
    }

    /// Queues a key after its backoff, counting a failure.
    pub fn add_rate_limited(&self, key: &str) {
        let failures = {
            let mut s = self.lock();
            s.retries += 1;
            let f = s.failures.entry(key.to_string()).or_insert(0);
            *f += 1;
            *f - 1
        };
        self.add_after(key, self.backoff.delay(failures));
    }

    /// Clears a key's failure count (after a success).
    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// How many times a key has failed in a row.
    pub fn failures(&self, key: &str) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// Waits for the next key; None once the queue is shut down. Call [`done`](Self::done) after processing.
    pub async fn next(&self) -> Option<String> {
        loop {
            let wait = {
                let mut s = self.lock();
                if s.closed {
                    return None;
                }
                let now = Instant::now();
                while let Some(entry) = s.later.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let key = entry.remove();
                    if !s.queued.contains(&key) {
                        if s.processing.contains(&key) {
                            s.dirty.insert(key);
                        } else {
                            s.queued.insert(key.clone());
                            s.ready.push_back(key);
                        }
                    }
                }
                if let Some(key) = s.ready.pop_front() {
                    s.queued.remove(&key);
                    s.processing.insert(key.clone());
                    return Some(key);
                }
                s.later.keys().next().map(|(t, _)| *t)
            };
            let notified = self.notify.notified();
            match wait {
                Some(t) => {
                    tokio::select! {
                        biased;
                        _ = notified => {}
                        _ = tokio::time::sleep_until(t) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks a key's processing finished; a key added meanwhile is queued again.
    pub fn done(&self, key: &str) {
        let mut s = self.lock();
        s.processing.remove(key);
        if s.dirty.remove(key) && !s.queued.contains(key) {
            s.queued.insert(key.to_string());
            s.ready.push_back(key.to_string());
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Stops the queue: `next` returns None from now on.
    pub fn shutdown(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }

    /// Keys ready or waiting (not counting those being processed).
    pub fn len(&self) -> usize {
        let s = self.lock();
        s.ready.len() + s.later.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn named_queues_report_depth_adds_retries_and_failing_keys() {
        let q = WorkQueue::new(Backoff::default());
        q.register("test-metrics-queue");
        q.add("a");
        q.add("a");
        q.add("b");
        q.add_rate_limited("c");
        let mine = |name: &str| stats().into_iter().find(|s| s.name == name);
        let s = mine("test-metrics-queue").unwrap();
        assert_eq!(
            (s.depth, s.adds, s.retries, s.failing, s.delayed),
            (2, 2, 1, 1, 1)
        );
        let text = prometheus();
        assert!(
            text.contains("workqueue_depth{name=\"test-metrics-queue\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE workqueue_adds_total counter\n"),
            "{text}"
        );
        drop(q);
        assert!(
            mine("test-metrics-queue").is_none(),
            "a dropped queue leaves the metrics"
        );
    }

    use super::*;

    #[tokio::test]
    async fn a_key_is_queued_once() {
        let q = WorkQueue::new(Backoff::default());
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await.as_deref(), Some("a"));
        assert_eq!(q.next().await.as_deref(), Some("b"));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_processing_runs_again_after() {
        let q = WorkQueue::new(Backoff::default());
        q.add("a");
        let k = q.next().await.unwrap();
        q.add("a");
        assert!(q.is_empty(), "not handed out twice at once");
        q.done(&k);
        assert_eq!(q.next().await.as_deref(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_and_forget_resets() {
        let q = WorkQueue::new(Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(35),
        });
        assert_eq!(q.backoff.delay(0), Duration::from_millis(10));
        assert_eq!(q.backoff.delay(1), Duration::from_millis(20));
        assert_eq!(q.backoff.delay(2), Duration::from_millis(35), "capped");
        let start = Instant::now();
        q.add_rate_limited("k");
        q.next().await.unwrap();
        q.done("k");
        q.add_rate_limited("k");
        q.next().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(30));
        assert_eq!(q.failures("k"), 2);
        q.forget("k");
        assert_eq!(q.failures("k"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_keys_come_in_time_order() {
        let q = WorkQueue::new(Backoff::default());
        q.add_after("late", Duration::from_secs(2));
        q.add_after("soon", Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(q.next().await.as_deref(), Some("soon"));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(q.next().await.as_deref(), Some("late"));
        q.shutdown();
        assert_eq!(q.next().await, None);
    }
}
