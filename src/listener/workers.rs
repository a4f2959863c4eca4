//! Worker threads for connections: each runs a single-threaded tokio runtime, so that a
//! connection, its requests, its upstream connections and their timers stay on one thread.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Threads that serve connections, each running a single-threaded tokio runtime: an event
/// loop of its own, as nginx's workers have. A connection, its requests, its upstream
/// connections and their timers all stay on one thread, with no work stealing and no
/// cross-thread wake-ups on the request path. A new connection goes to the worker with the
/// fewest open connections.
pub struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    handle: tokio::runtime::Handle,
    open: Arc<AtomicUsize>,
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
                open: Arc::new(AtomicUsize::new(0)),
                stop: Mutex::new(Some(stop)),
                stopped: Mutex::new(Some(stopped)),
            });
        }
        Ok(Workers { workers })
    }

    /// Runs a connection's task on the least busy worker.
    pub(super) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(worker) = self
            .workers
            .iter()
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
        else {
            return;
        };
        let open = OpenConnection::enter(Arc::clone(&worker.open));
        worker.handle.spawn(async move {
            task.await;
            drop(open);
        });
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

/// Counts a connection against its worker until its task ends or is dropped.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn enter(open: Arc<AtomicUsize>) -> OpenConnection {
        open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(open)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Connections go to the worker with the fewest open ones, each worker is a thread of its
    /// own, and a connection that ends frees its place.
    #[tokio::test]
    async fn connections_go_to_the_least_busy_worker() {
        let workers = Workers::start(2, "test-worker").unwrap();
        let thread_of = |hold: oneshot::Receiver<()>| {
            let (tx, rx) = oneshot::channel();
            workers.spawn(async move {
                let _ = tx.send(std::thread::current().name().map(str::to_owned));
                let _ = hold.await;
            });
            rx
        };
        let (release_a, hold_a) = oneshot::channel();
        let (_release_b, hold_b) = oneshot::channel();
        let a = thread_of(hold_a).await.unwrap().unwrap();
        let b = thread_of(hold_b).await.unwrap().unwrap();
        assert!(a.starts_with("test-worker-") && b.starts_with("test-worker-"));
        assert_ne!(a, b, "the second connection goes to the idle worker");
        // End the first; the next connection takes its worker, the one now idle.
        release_a.send(()).unwrap();
        let open = || {
            workers
                .workers
                .iter()
                .map(|w| w.open.load(Ordering::Relaxed))
                .sum::<usize>()
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            while open() > 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the ended connection is no longer counted");
        let (_release_c, hold_c) = oneshot::channel();
        assert_eq!(thread_of(hold_c).await.unwrap().unwrap(), a);
        workers.stop().await;
    }
}
