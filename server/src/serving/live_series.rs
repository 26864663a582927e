//! A run's curves for the live fragment, at a million points as at a thousand.
//!
//! Every key is downsampled in SQL by the one rule of
//! [`aligndet_common::series::downsample_keep_extremes`] (`db::runs::metric_series_downsampled`),
//! so at most [`MAX_POINTS_PER_LINE`] points per key leave Postgres. The result is cached per
//! run until the run's change notification (the NOTIFY that also wakes the page) arrives: fifty
//! viewers of an unchanged run share one computation and one drawing of each chart. Every view
//! also fetches what was stored after the snapshot (one index probe per key, new keys
//! included) and draws it on, so appended points and the last point are exact at once, even
//! before the asynchronous notification arrives. A full recomputation (rewritten steps, e.g.
//! after a resume) runs in the background, at most once per [`COOLDOWN_FACTOR`] × its own
//! cost, so a long run that logs every second does not keep the database busy.

use crate::db;
use crate::plots::MAX_POINTS_PER_LINE;
use crate::state::AppState;
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::sync::watch;

/// A snapshot this old is recomputed even without a notification: one can be lost while the
/// notification listener reconnects.
const MAX_AGE: Duration = Duration::from_secs(10);
/// A run's series are recomputed at most once per this many times the last computation took…
const COOLDOWN_FACTOR: u32 = 4;
/// …and never more often than this.
const MIN_COOLDOWN: Duration = Duration::from_secs(1);
/// Most points per key patched onto a stale snapshot (a few cooldowns' worth of logging).
const TAIL_LIMIT: i64 = 20_000;
/// Runs whose snapshot is this old are forgotten when a new run is looked up.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// One metric key as the page draws it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeySeries {
    /// Points stored, finite or not.
    pub count: i64,
    /// The last stored step (finite value or not).
    pub last_step: i64,
    /// The smallest stored value: a one-point series' value.
    pub min_value: f64,
    /// The finite points, downsampled, in step order.
    pub points: Vec<(f64, f64)>,
}

/// Every key of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveSeries {
    pub keys: BTreeMap<String, KeySeries>,
    /// Charts drawn from these points, so viewers of an unchanged run share one drawing.
    charts: ChartMemo,
}

#[derive(Default)]
struct ChartMemo(Mutex<HashMap<String, Arc<str>>>);

impl Clone for ChartMemo {
    /// A copy is about to get other points: it starts with no drawings.
    fn clone(&self) -> ChartMemo {
        ChartMemo::default()
    }
}

impl PartialEq for ChartMemo {
    fn eq(&self, _: &ChartMemo) -> bool {
        true
    }
}

impl std::fmt::Debug for ChartMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChartMemo")
    }
}

impl LiveSeries {
    /// (key, stored points) in key order, as `db::runs::metric_keys` gives them.
    pub fn key_counts(&self) -> Vec<(String, i64)> {
        self.keys
            .iter()
            .map(|(k, s)| (k.clone(), s.count))
            .collect()
    }

    /// A key's finite points (downsampled), for a chart.
    pub fn points(&self, key: &str) -> Vec<(f64, f64)> {
        self.keys
            .get(key)
            .map(|s| s.points.clone())
            .unwrap_or_default()
    }

    /// The chart called `id` (which must name everything it shows besides these points), drawn
    /// once per snapshot.
    pub fn chart(&self, id: &str, draw: impl FnOnce() -> String) -> String {
        let memo = |m: &ChartMemo| {
            m.0.lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(id)
                .cloned()
        };
        if let Some(svg) = memo(&self.charts) {
            return svg.to_string();
        }
        let svg = draw();
        let mut m = self.charts.0.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(id.to_string(), svg.as_str().into());
        svg
    }

    /// The value of a key that has exactly one point.
    pub fn single_value(&self, key: &str) -> Option<f64> {
        self.keys
            .get(key)
            .filter(|s| s.count == 1)
            .map(|s| s.min_value)
    }
}

/// The run's curves: the cached snapshot (computed now if there is none) plus whatever was
/// stored after it.
pub async fn for_run(s: &AppState, run_id: i64) -> anyhow::Result<Arc<LiveSeries>> {
    let cache = cache_for(s);
    let ready = {
        let mut inner = cache.lock();
        inner.drain_notifications();
        inner.forget_old(run_id);
        let slot = inner.runs.entry(run_id).or_default();
        let fresh = slot
            .latest
            .as_ref()
            .is_some_and(|l| l.generation == slot.generation && l.made.elapsed() < MAX_AGE);
        let cooling = slot
            .latest
            .as_ref()
            .is_some_and(|l| l.made.elapsed() < (l.cost * COOLDOWN_FACTOR).max(MIN_COOLDOWN));
        if !fresh && slot.pending.is_none() && (!cooling || slot.latest.is_none()) {
            slot.pending = Some(start(&s.pool, &cache, run_id, slot.generation));
        }
        let seen = (slot.writes, slot.checked.clone());
        match (&slot.latest, &slot.pending) {
            (Some(l), _) => Ok((l.series.clone(), slot.patched.clone(), seen)),
            (None, Some(rx)) => Err((rx.clone(), seen)),
            (None, None) => unreachable!("a computation was just started"),
        }
    };
    let (base, patched, (writes, checked)) = match ready {
        Ok(ready) => ready,
        Err((mut rx, seen)) => {
            let done = rx
                .wait_for(Option::is_some)
                .await
                .map_err(|_| anyhow::anyhow!("computing the curves of run {run_id} stopped"))?;
            match done.as_ref() {
                Some(Ok(snap)) => (snap.series.clone(), None, seen),
                Some(Err(e)) => return Err(anyhow::anyhow!("curves of run {run_id}: {e}")),
                None => unreachable!("waited for Some"),
            }
        }
    };
    // Nothing written through this server since the last viewer looked past this snapshot:
    // that viewer's answer still holds (metrics reach the database only through our API).
    if let Some(c) = checked
        && c.writes == writes
        && Arc::ptr_eq(&c.base, &base)
    {
        return Ok(c.series);
    }
    let remember = |series: &Arc<LiveSeries>| {
        if let Some(slot) = cache.lock().runs.get_mut(&run_id) {
            slot.checked = Some(Checked {
                writes,
                base: base.clone(),
                series: series.clone(),
            });
        }
    };
    // Read-your-writes: points and keys stored after the snapshot show at once, whether or
    // not their notification has arrived (it is asynchronous).
    let after: Vec<(&str, i64)> = base
        .keys
        .iter()
        .map(|(k, s)| (k.as_str(), s.last_step))
        .collect();
    let tail = db::runs::metric_tails(&s.pool, run_id, &after, TAIL_LIMIT).await?;
    if tail.is_empty() {
        remember(&base);
        return Ok(base);
    }
    if let Some(p) = patched
        && Arc::ptr_eq(&p.base, &base)
        && p.tail == tail
    {
        // The same patch as the previous viewer's: share it and its drawings.
        remember(&p.series);
        return Ok(p.series);
    }
    let series = Arc::new(with_tail(&base, &tail));
    remember(&series);
    if let Some(slot) = cache.lock().runs.get_mut(&run_id) {
        slot.patched = Some(Patched {
            base,
            tail,
            series: series.clone(),
        });
    }
    Ok(series)
}

/// What a viewer found after a snapshot, and the run's write count when it looked.
#[derive(Clone)]
struct Checked {
    writes: u64,
    base: Arc<LiveSeries>,
    series: Arc<LiveSeries>,
}

/// Count a metrics write to `run_id` (called by the API before it answers), so the next viewer
/// knows to look past its snapshot.
pub fn note_write(s: &AppState, run_id: i64) {
    let cache = cache_for(s);
    cache.lock().runs.entry(run_id).or_default().writes += 1;
}

/// A snapshot with the points stored after it.
#[derive(Clone)]
struct Patched {
    base: Arc<LiveSeries>,
    tail: Vec<(String, i64, f64)>,
    series: Arc<LiveSeries>,
}

#[derive(Clone)]
struct Snapshot {
    series: Arc<LiveSeries>,
    /// The run's notification count when the computation started.
    generation: u64,
    made: Instant,
    cost: Duration,
}

#[derive(Default)]
struct Slot {
    /// Change notifications seen for the run.
    generation: u64,
    latest: Option<Snapshot>,
    /// The last patch of a snapshot, shared while nothing more arrives.
    patched: Option<Patched>,
    /// Metrics writes through this server (see [`note_write`]).
    writes: u64,
    /// The last look past the snapshot, valid while `writes` has not moved.
    checked: Option<Checked>,
    /// The computation in flight, if any; it runs in its own task, so a viewer that goes away
    /// cannot leave it half done.
    pending: Option<watch::Receiver<Option<Result<Snapshot, String>>>>,
}

struct Inner {
    changes: broadcast::Receiver<i64>,
    runs: HashMap<i64, Slot>,
}

impl Inner {
    fn drain_notifications(&mut self) {
        loop {
            match self.changes.try_recv() {
                Ok(id) => {
                    if let Some(slot) = self.runs.get_mut(&id) {
                        slot.generation += 1;
                    }
                }
                // Missed some: any run may have changed.
                Err(TryRecvError::Lagged(_)) => {
                    for slot in self.runs.values_mut() {
                        slot.generation += 1;
                    }
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
    }

    fn forget_old(&mut self, keep: i64) {
        if self.runs.len() < 64 || self.runs.contains_key(&keep) {
            return;
        }
        self.runs.retain(|_, s| {
            s.pending.is_some()
                || s.latest
                    .as_ref()
                    .is_some_and(|l| l.made.elapsed() < FORGET_AFTER)
        });
    }
}

/// One per server (per change channel).
pub struct Cache(Mutex<Inner>);

impl Cache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The map stays consistent across a panic elsewhere: every update is one assignment.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The cache of the server that owns `s.run_changed`. Kept here rather than in `AppState` so
/// that it needs nothing of it but the channel; several servers in one process (tests) each
/// get their own.
fn cache_for(s: &AppState) -> Arc<Cache> {
    type Registry = Mutex<Vec<(broadcast::WeakSender<i64>, Arc<Cache>)>>;
    static CACHES: OnceLock<Registry> = OnceLock::new();
    let mut all = CACHES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    all.retain(|(w, _)| w.strong_count() > 0);
    if let Some((_, c)) = all.iter().find(|(w, _)| {
        w.upgrade()
            .is_some_and(|tx| tx.same_channel(&s.run_changed))
    }) {
        return c.clone();
    }
    let cache = Arc::new(Cache(Mutex::new(Inner {
        changes: s.run_changed.subscribe(),
        runs: HashMap::new(),
    })));
    all.push((s.run_changed.downgrade(), cache.clone()));
    cache
}

fn start(
    pool: &PgPool,
    cache: &Arc<Cache>,
    run_id: i64,
    generation: u64,
) -> watch::Receiver<Option<Result<Snapshot, String>>> {
    let (tx, rx) = watch::channel(None);
    let (pool, cache) = (pool.clone(), cache.clone());
    tokio::spawn(async move {
        let t0 = Instant::now();
        let result = compute(&pool, run_id)
            .await
            .map(|series| Snapshot {
                series: Arc::new(series),
                generation,
                made: Instant::now(),
                cost: t0.elapsed(),
            })
            .map_err(|e| e.to_string());
        if let Some(slot) = cache.lock().runs.get_mut(&run_id) {
            slot.pending = None;
            if let Ok(snap) = &result
                && slot
                    .latest
                    .as_ref()
                    .is_none_or(|l| l.generation <= snap.generation)
            {
                slot.latest = Some(snap.clone());
            }
        }
        let _ = tx.send(Some(result));
    });
    rx
}

/// Both queries in one read-only snapshot, so counts, last steps and points agree.
pub async fn compute(pool: &PgPool, run_id: i64) -> sqlx::Result<LiveSeries> {
    let mut tx = db::begin_snapshot(pool).await?;
    let ends = db::runs::metric_key_ends(&mut *tx, run_id).await?;
    let rows = db::runs::metric_series_downsampled(&mut *tx, run_id, MAX_POINTS_PER_LINE).await?;
    tx.commit().await?;
    let mut keys: BTreeMap<String, KeySeries> = ends
        .into_iter()
        .map(|(key, count, last_step, min_value)| {
            let s = KeySeries {
                count,
                last_step,
                min_value,
                points: Vec::new(),
            };
            (key, s)
        })
        .collect();
    for (key, step, value) in rows {
        if let Some(s) = keys.get_mut(&key) {
            s.points.push((step as f64, value));
        }
    }
    Ok(LiveSeries {
        keys,
        charts: ChartMemo::default(),
    })
}

/// `base` plus the points stored after it (`db::runs::metric_tails`).
fn with_tail(base: &LiveSeries, tail: &[(String, i64, f64)]) -> LiveSeries {
    let mut out = base.clone();
    for (key, step, value) in tail {
        let s = out.keys.entry(key.clone()).or_default();
        // As Postgres's MIN: NaN only when every value is NaN.
        if s.count == 0 || *value < s.min_value || s.min_value.is_nan() {
            s.min_value = *value;
        }
        s.count += 1;
        s.last_step = *step;
        if value.is_finite() {
            s.points.push((*step as f64, *value));
        }
    }
    out
}
