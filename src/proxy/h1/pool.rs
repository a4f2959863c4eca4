//! Where idle upstream connections wait: the client connection's own slots ([`Held`], one
//! connection per upstream), and once the client connection ends, its worker's idle pool, so
//! that a client that opens a connection per request does not cost an upstream connection
//! each.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::Connection;

/// Most idle upstream connections a worker keeps per upstream.
const MAX_IDLE_PER_WORKER: usize = 64;
/// An idle upstream connection unused for this long is closed rather than reused.
const MAX_IDLE_TIME: Duration = Duration::from_secs(60);

type IdleConnections = VecDeque<(Connection, Instant)>;

thread_local! {
    /// Idle upstream connections left by the client connections that ended on this thread,
    /// by upstream key, most recently used last. A worker's upstream connections are
    /// registered with its own event loop, so they are reused only there.
    static IDLE: RefCell<HashMap<u64, IdleConnections, BuildHasherDefault<KeyHasher>>> =
        RefCell::new(HashMap::default());
}

/// The idle pool's hash of an upstream key. Keys are the gateway's own counter, never a
/// client's choice, so they need no keyed hash; std's SipHash cost about 140 instructions a
/// lookup, two per client connection (its slots are taken from the pool and given back).
/// Multiplying by an odd constant is a bijection of the 64-bit keys (distinct keys never
/// collide), and it spreads consecutive keys over the high bits the map also reads.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write_u64(&mut self, key: u64) {
        self.0 = (self.0 ^ key).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The upstream connections one client connection holds, at most one per upstream key, each
/// taken out while a request uses it. When the last reference goes (the client connection
/// and any response body still streaming), they go to the worker's idle pool.
#[derive(Default)]
pub struct Held(Mutex<Vec<(u64, Connection)>>);

impl Held {
    /// The connection held for `key`, else one from this worker's idle pool.
    pub fn take(&self, key: u64) -> Option<Connection> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match held.iter().position(|(k, _)| *k == key) {
            Some(i) => Some(held.swap_remove(i).1),
            None => idle_take(key),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let held = std::mem::take(self.0.get_mut().unwrap_or_else(|e| e.into_inner()));
        for (key, conn) in held {
            idle_put(key, conn);
        }
    }
}

/// Where a connection goes back once a response has been read whole: its client
/// connection's slot for its upstream.
pub struct Home {
    held: Arc<Held>,
    key: u64,
}

impl Home {
    pub fn new(held: Arc<Held>, key: u64) -> Home {
        Home { held, key }
    }

    pub(super) fn put(self, conn: Connection) {
        let mut held = self.held.0.lock().unwrap_or_else(|e| e.into_inner());
        if !held.iter().any(|(key, _)| *key == self.key) {
            held.push((self.key, conn));
        }
    }
}

/// Most recently used last. Constant work per call, whatever the pool holds: a client that
/// opens a connection per request puts and takes once per request.
fn idle_put(key: u64, conn: Connection) {
    let now = Instant::now();
    IDLE.with_borrow_mut(|idle| {
        let pool = idle.entry(key).or_default();
        // The oldest goes when the pool is full or it has idled too long; it is closed on drop.
        if pool.len() >= MAX_IDLE_PER_WORKER
            || pool
                .front()
                .is_some_and(|(_, since)| now.duration_since(*since) >= MAX_IDLE_TIME)
        {
            pool.pop_front();
        }
        pool.push_back((conn, now));
    });
}

fn idle_take(key: u64) -> Option<Connection> {
    let now = Instant::now();
    IDLE.with_borrow_mut(|idle| {
        let pool = idle.get_mut(&key)?;
        // Checked by the caller (`Connection::is_usable`) before use; one idle too long is
        // dropped here, and with it every older one.
        let (conn, since) = pool.pop_back()?;
        if now.duration_since(since) < MAX_IDLE_TIME {
            Some(conn)
        } else {
            pool.clear();
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// Keys as the gateway makes them (a counter from 0) and far apart: distinct hashes, and
    /// consecutive keys differ in the high bits too.
    #[test]
    fn upstream_keys_hash_apart() {
        let hash = |key: u64| BuildHasherDefault::<KeyHasher>::default().hash_one(key);
        let keys: Vec<u64> = (0..10_000).chain([u64::MAX, 1 << 63, 1 << 32]).collect();
        let hashes: std::collections::HashSet<u64> = keys.iter().map(|&k| hash(k)).collect();
        assert_eq!(hashes.len(), keys.len());
        let tops: std::collections::HashSet<u64> = (0..128).map(|k| hash(k) >> 57).collect();
        assert!(tops.len() > 64, "{} of 128 top-7-bit values", tops.len());
    }
}
