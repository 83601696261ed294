//! Every entry's pending refresh or retry in one queue, ordered by when it
//! is due and run by one task: an entry's timer is a small record in the
//! queue, not a task of its own with its sleep (which cost about 1.2 KB an
//! entry).
//!
//! A timer is identified by its deadline and a ticket that is never
//! reused. The slot's `SlotState::timer` names its pending one; stopping
//! it removes it from the queue, and a timer that fires checks, under the
//! slot's lock, that it is still the slot's: one stopped or replaced in the
//! moment between leaving the queue and that check does nothing.
//!
//! (tokio-util's `DelayQueue` does not fit: its keys are slab indices that
//! are reused once an entry has fired, so a stop racing a firing could
//! remove another entry's timer.)

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Inner;
use super::key::Key;
use super::slot::{Slot, TimerId};

/// What a timer does when it is due.
#[derive(Debug, Clone, Copy)]
pub(super) enum Due {
    /// Refreshes the value if it was read since it was fetched.
    Refresh,
    /// Tries a failed refresh again.
    Retry,
    /// Drops the value: it is past `max-stale` and AWS still fails.
    Lapse,
}

struct Timer {
    key: Key,
    /// Weak: a slot that has left the cache is not kept for its timer.
    slot: Weak<Slot>,
    due: Due,
}

#[derive(Default)]
pub(super) struct Timers {
    queue: Mutex<BTreeMap<TimerId, Timer>>,
    tickets: AtomicU64,
    /// Told when a timer becomes the first due.
    sooner: Notify,
}

impl Timers {
    /// Sets a timer for `slot` at `at`; the caller keeps the returned id in
    /// the slot's state, under its lock.
    pub(super) fn set(&self, key: &Key, slot: &Arc<Slot>, at: Instant, due: Due) -> TimerId {
        let id = TimerId {
            at,
            ticket: self.tickets.fetch_add(1, Ordering::Relaxed),
        };
        let timer = Timer {
            key: key.clone(),
            slot: Arc::downgrade(slot),
            due,
        };
        let mut queue = self.lock();
        queue.insert(id, timer);
        let first = queue
            .first_key_value()
            .is_some_and(|(first, _)| *first == id);
        drop(queue);
        if first {
            self.sooner.notify_one();
        }
        id
    }

    /// Removes a pending timer; one that has just fired is not there any
    /// more, and does nothing once it sees it is no longer the slot's.
    pub(super) fn stop(&self, id: TimerId) {
        self.lock().remove(&id);
    }

    /// Timers pending, stopped ones not counted.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<TimerId, Timer>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The first timer, if it is due by `now`, out of the queue; else when
    /// the first one is due.
    fn next(&self, now: Instant) -> Result<(TimerId, Timer), Option<Instant>> {
        let mut queue = self.lock();
        match queue.first_key_value() {
            Some((id, _)) if id.at <= now => Ok(queue.pop_first().expect("a first timer")),
            Some((id, _)) => Err(Some(id.at)),
            None => Err(None),
        }
    }
}

/// Runs the timers of `inner` as they fall due, until the cache is gone
/// (spawned among the cache's tasks, it also ends when they are cancelled).
pub(super) async fn run(timers: Arc<Timers>, inner: Weak<Inner>) {
    run_with(timers, |id, timer| {
        let Some(inner) = inner.upgrade() else {
            return ControlFlow::Break(());
        };
        if let Some(slot) = timer.slot.upgrade() {
            inner.fire(id, timer.key, slot, timer.due);
        }
        ControlFlow::Continue(())
    })
    .await;
}

/// Takes each timer out of the queue once it is due and gives it to `fire`,
/// until that breaks.
async fn run_with(timers: Arc<Timers>, mut fire: impl FnMut(TimerId, Timer) -> ControlFlow<()>) {
    loop {
        match timers.next(Instant::now()) {
            Ok((id, timer)) => {
                if fire(id, timer).is_break() {
                    return;
                }
            }
            Err(at) => {
                // Made before the next look at the queue would be too late:
                // `notify_one` keeps a permit for it when no one waits.
                let sooner = timers.sooner.notified();
                match at {
                    Some(at) => {
                        tokio::select! {
                            () = tokio::time::sleep_until(at) => {}
                            () = sooner => {}
                        }
                    }
                    None => sooner.await,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::testing::*;

    #[tokio::test(start_paused = true)]
    async fn a_timer_per_read_entry_and_none_once_evicted() {
        let (_fake, cache) = setup(crate::config::CacheConfig {
            max_entries: 10,
            ..settings()
        });
        for n in 0..10 {
            read(&cache, n).await.unwrap();
        }
        settle().await;
        assert_eq!(cache.inner.timers.len(), 10);
        // Ten more push the first ten out: their timers go with them.
        for n in 10..20 {
            read(&cache, n).await.unwrap();
        }
        settle().await;
        assert_eq!(cache.inner.timers.len(), 10);
        // Refreshed, each entry still has one.
        tokio::time::sleep(Duration::from_secs(200)).await;
        for n in 10..20 {
            read(&cache, n).await.unwrap();
        }
        settle().await;
        assert_eq!(cache.inner.timers.len(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sooner_timer_wakes_the_queue() {
        let timers = Arc::new(Timers::default());
        let (fired_tx, mut fired) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(run_with(Arc::clone(&timers), move |id, _| {
            fired_tx.send(id.at).unwrap();
            ControlFlow::Continue(())
        }));
        let slot = Arc::new(Slot::new(0));
        let key = Key::new(&arn(1), &crate::domain::Version::Current);
        let start = Instant::now();
        timers.set(&key, &slot, start + Duration::from_secs(100), Due::Refresh);
        settle().await;
        let soon = timers.set(&key, &slot, start + Duration::from_secs(10), Due::Refresh);
        let stopped = timers.set(&key, &slot, start + Duration::from_secs(50), Due::Retry);
        timers.stop(stopped);
        assert_eq!(fired.recv().await, Some(soon.at));
        assert_eq!(Instant::now(), start + Duration::from_secs(10));
        assert_eq!(fired.recv().await, Some(start + Duration::from_secs(100)));
        assert_eq!(timers.len(), 0);
    }
}
