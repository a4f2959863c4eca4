//! Worker threads for connections: each runs a single-threaded tokio runtime, so that a
//! connection, its requests, its upstream connections and their timers stay on one thread.

use std::future::Future;
use std::io;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

/// Threads that serve connections, each running a single-threaded tokio runtime: an event
/// loop of its own, as nginx's workers have. Each accepts its own connections (its own
/// `SO_REUSEPORT` socket: `listener::bind_shared`), and a connection, its requests, its
/// upstream connections and their timers all stay on that thread, with no work stealing and
/// no cross-thread wake-ups on the request path, not even for a new connection.
pub struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    handle: tokio::runtime::Handle,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Workers {
    /// Starts `n` (at least one) worker threads named `{name}-N`.
    pub fn start(n: usize, name: &str) -> io::Result<Workers> {
        let mut workers = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stop_rx) = oneshot::channel::<()>();
            let (stopped_tx, stopped) = oneshot::channel();
            let handle = runtime.handle().clone();
            runtime.spawn(keep_a_timer_due());
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    // Runs the worker's tasks until told to stop (or until `Workers` is
                    // dropped); dropping the runtime then ends whatever is left.
                    let _ = runtime.block_on(stop_rx);
                    drop(runtime);
                    let _ = stopped_tx.send(());
                })?;
            workers.push(Worker {
                handle,
                stop: Mutex::new(Some(stop)),
                stopped: Mutex::new(Some(stopped)),
            });
        }
        Ok(Workers { workers })
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Runs `task` on worker `i` (modulo their number): its accept loop.
    pub(super) fn run_on<F>(&self, i: usize, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if let Some(worker) = self.workers.get(i % self.workers.len().max(1)) {
            worker.handle.spawn(task);
        }
    }

    /// Stops every worker (tasks still running there are dropped) and waits for the threads
    /// to end.
    pub async fn stop(&self) {
        for w in &self.workers {
            if let Some(stop) = w.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = stop.send(());
            }
        }
        for w in &self.workers {
            let stopped = w.stopped.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(stopped) = stopped {
                let _ = stopped.await;
            }
        }
    }
}

/// How often a worker's timer fires: sooner than any deadline a connection registers.
const TIMER_DUE_EVERY: Duration = Duration::from_millis(500);

/// Keeps a timer in the worker's timer wheel that is always due within [`TIMER_DUE_EVERY`].
/// tokio's timer driver, when a timer is registered that is due before the driver's next
/// planned wake-up, wakes the event loop through its eventfd (a `write` system call), even
/// from the event loop's own thread. A connection's deadlines are all seconds away: its
/// first-request timer while no request has come, its watch of quiet spells (the idle or
/// header-read timeout), each upstream connection's response-head deadline. With nothing due
/// sooner in the wheel, registering such a timer wrote (when hyper still kept a header-read
/// timer per request head, up to one `write` per request in four on keep-alive connections;
/// benches/README.md, 2026-12-01). The cost is one wake-up per interval.
async fn keep_a_timer_due() {
    let mut interval = tokio::time::interval(TIMER_DUE_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each worker is a thread of its own, and runs what it is given there.
    #[tokio::test]
    async fn each_worker_is_a_thread_of_its_own() {
        let workers = Workers::start(2, "test-worker").unwrap();
        let mut names = Vec::new();
        for i in 0..2 {
            let (tx, rx) = oneshot::channel();
            workers.run_on(i, async move {
                let _ = tx.send(std::thread::current().name().map(str::to_owned));
            });
            names.push(rx.await.unwrap().unwrap());
        }
        assert_eq!(names, ["test-worker-0", "test-worker-1"]);
        workers.stop().await;
    }
}
