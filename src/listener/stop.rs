//! The stop notification for one accept loop's connections.
//!
//! Every connection waits for the listener to stop for as long as it lives. On the process's
//! shutdown `watch` each wait registered in, and later left, the one list every worker's
//! connections share (a lock both threads take, for every connection): about 400 instructions
//! a wait, and 2.2 waits per connection with the accept loop's own (`benches/load/callgrind.sh`
//! built without LTO, a new connection per request).
//! Here the accept loop alone waits on the process's notification; its connections each
//! take a slot in its own list, which only its own worker's connections use, and it wakes
//! them all when it stops.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use slab::Slab;

/// The stop notification one accept loop gives its connections: [`Stop::signal`] once, and
/// every [`Stop::wait`], before or after it, resolves.
#[derive(Default)]
pub(super) struct Stop {
    stopped: AtomicBool,
    waiting: Mutex<Slab<Waker>>,
}

impl Stop {
    /// Marks the listener stopped and wakes every waiting connection.
    pub(super) fn signal(&self) {
        self.stopped.store(true, Ordering::Release);
        for waker in self.waiting().drain() {
            waker.wake();
        }
    }

    /// Resolves once [`Stop::signal`] has been called.
    pub(super) fn wait(&self) -> Wait<'_> {
        Wait {
            stop: self,
            slot: None,
        }
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    fn waiting(&self) -> MutexGuard<'_, Slab<Waker>> {
        // A waker that panicked while being woken leaves the list usable.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One connection's wait for [`Stop::signal`]: it holds a slot in the list while pending and
/// gives it back when dropped.
pub(super) struct Wait<'a> {
    stop: &'a Stop,
    slot: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.stop.is_stopped() {
            return Poll::Ready(());
        }
        let stop = self.stop;
        let mut waiting = stop.waiting();
        match self.slot {
            Some(slot) => match waiting.get_mut(slot) {
                Some(waker) => waker.clone_from(cx.waker()),
                // Drained by `signal`, which then set the flag before taking the list.
                None => return Poll::Ready(()),
            },
            None => self.slot = Some(waiting.insert(cx.waker().clone())),
        }
        drop(waiting);
        // `signal` may have set the flag after the first look and drained the list before
        // this slot was in it.
        if stop.is_stopped() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            // Gone already if `signal` drained the list: that slot may be another's by now,
            // so only a list not yet drained is touched.
            if !self.stop.is_stopped() {
                self.stop.waiting().try_remove(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(wait: &mut Wait<'_>, waker: &Waker) -> Poll<()> {
        Pin::new(wait).poll(&mut Context::from_waker(waker))
    }

    /// Waits begun before the signal are woken by it and then resolve; a wait begun after it
    /// resolves at once; a wait dropped before it gives its slot back.
    #[test]
    fn the_signal_wakes_and_ends_every_wait() {
        let stop = Stop::default();
        let counters: Vec<Arc<Counter>> = (0..3).map(|_| Arc::default()).collect();
        let wakers: Vec<Waker> = counters
            .iter()
            .map(|c| Waker::from(Arc::clone(c)))
            .collect();
        let mut waits: Vec<Wait<'_>> = (0..3).map(|_| stop.wait()).collect();
        for (wait, waker) in waits.iter_mut().zip(&wakers) {
            assert!(poll(wait, waker).is_pending());
        }
        // Polled again, each keeps its one slot.
        assert!(poll(&mut waits[0], &wakers[0]).is_pending());
        assert_eq!(stop.waiting().len(), 3);
        drop(waits.pop());
        assert_eq!(stop.waiting().len(), 2, "a dropped wait leaves the list");

        stop.signal();
        let woken: Vec<usize> = counters
            .iter()
            .map(|c| c.0.load(Ordering::SeqCst))
            .collect();
        assert_eq!(woken, [1, 1, 0], "the waits still pending are woken");
        for (wait, waker) in waits.iter_mut().zip(&wakers) {
            assert!(poll(wait, waker).is_ready());
        }
        assert!(poll(&mut stop.wait(), &wakers[2]).is_ready());
        assert!(stop.waiting().is_empty());
    }

    /// A wait polled from another task wakes that task, not the first.
    #[test]
    fn a_wait_wakes_the_task_that_polled_it_last() {
        let stop = Stop::default();
        let (first, second) = (Arc::new(Counter::default()), Arc::new(Counter::default()));
        let mut wait = stop.wait();
        assert!(poll(&mut wait, &Waker::from(Arc::clone(&first))).is_pending());
        assert!(poll(&mut wait, &Waker::from(Arc::clone(&second))).is_pending());
        stop.signal();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }
}
