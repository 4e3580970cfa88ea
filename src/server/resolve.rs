//! Member addresses (`HOST:PORT`) to socket addresses without blocking the
//! runtime.
//!
//! `getaddrinfo` blocks for as long as the resolver takes (seconds when DNS
//! is slow or down), so the driver never calls it: an IP literal is parsed
//! on the spot; a name is answered from a cache, and a missing or stale
//! entry starts one background lookup ([`tokio::net::lookup_host`], which
//! runs on tokio's blocking pool, bounded by [`RESOLVE_TIMEOUT`]). When a
//! lookup changes an answer, [`Resolver::changed`] wakes whoever links to
//! the members, so a name that resolves late is linked then.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, warn};

/// A lookup that takes longer is abandoned (the name counts as unresolved).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// A cached answer older than this is still used, but looked up again in
/// the background, so a member whose name moves is followed.
pub const RESOLVE_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Names cached at most; members are a handful, so reaching it means names
/// churn (membership changes over a long life): the cache then starts over.
pub const RESOLVE_CACHE_NAMES_MAX: usize = 1024;

/// What [`Resolver::resolve`] knows about a name now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    Ready(SocketAddr),
    /// The first lookup is still running.
    Pending,
    /// The last lookup failed or found no address.
    Failed,
}

#[derive(Debug)]
struct Entry {
    addr: Option<SocketAddr>,
    /// When the answer was last looked up; `None` before the first ended.
    resolved_at: Option<Instant>,
    lookup_running: bool,
}

#[derive(Debug)]
struct Inner {
    cache: Mutex<HashMap<String, Entry>>,
    changed: watch::Sender<u64>,
}

/// A shared, non-blocking name cache (cheap to clone).
#[derive(Clone, Debug)]
pub struct Resolver {
    inner: Arc<Inner>,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::new()
    }
}

fn lock(cache: &Mutex<HashMap<String, Entry>>) -> MutexGuard<'_, HashMap<String, Entry>> {
    // Every update is a single insert or field store: a panic elsewhere
    // cannot leave an entry half-written.
    cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Resolver {
    pub fn new() -> Resolver {
        let (changed, _) = watch::channel(0);
        Resolver {
            inner: Arc::new(Inner {
                cache: Mutex::new(HashMap::new()),
                changed,
            }),
        }
    }

    /// A receiver that changes whenever a background lookup changed an answer.
    pub fn changed(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// The address of `addr` now, never blocking. Must be called inside a
    /// tokio runtime (a lookup it starts is a task).
    pub fn resolve(&self, addr: &str) -> Resolution {
        if let Ok(socket) = addr.parse::<SocketAddr>() {
            return Resolution::Ready(socket);
        }
        let mut cache = lock(&self.inner.cache);
        if cache.len() >= RESOLVE_CACHE_NAMES_MAX && !cache.contains_key(addr) {
            cache.clear();
        }
        let entry = cache.entry(addr.to_string()).or_insert(Entry {
            addr: None,
            resolved_at: None,
            lookup_running: false,
        });
        let stale = match entry.resolved_at {
            None => true,
            Some(at) => at.elapsed() >= RESOLVE_REFRESH_INTERVAL,
        };
        if stale && !entry.lookup_running {
            entry.lookup_running = true;
            tokio::spawn(lookup(self.inner.clone(), addr.to_string()));
        }
        match (entry.addr, entry.resolved_at) {
            (Some(socket), _) => Resolution::Ready(socket),
            (None, None) => Resolution::Pending,
            (None, Some(_)) => Resolution::Failed,
        }
    }
}

/// Looks `addr` up (bounded), stores the answer, and signals a change.
async fn lookup(inner: Arc<Inner>, addr: String) {
    let found = match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(&addr)).await {
        Ok(Ok(mut addrs)) => addrs.next(),
        Ok(Err(error)) => {
            warn!(%addr, %error, "cannot resolve a member's address");
            None
        }
        Err(_) => {
            warn!(%addr, timeout_ms = RESOLVE_TIMEOUT.as_millis() as u64, "resolving a member's address timed out");
            None
        }
    };
    let changed = {
        let mut cache = lock(&inner.cache);
        let entry = cache.entry(addr.clone()).or_insert(Entry {
            addr: None,
            resolved_at: None,
            lookup_running: true,
        });
        // A failed refresh keeps the last good answer: a DNS hiccup must
        // not unlink a member.
        let new_addr = found.or(entry.addr);
        let changed = entry.addr != new_addr || entry.resolved_at.is_none();
        entry.addr = new_addr;
        entry.resolved_at = Some(Instant::now());
        entry.lookup_running = false;
        changed
    };
    debug!(%addr, ?found, "resolved a member's address");
    if changed {
        inner
            .changed
            .send_modify(|count| *count = count.wrapping_add(1));
    }
}

/// Resolves `addr` once, waiting for the answer (bounded by
/// [`RESOLVE_TIMEOUT`]); for start-up, where the runtime may wait.
pub async fn resolve_once(addr: &str) -> Option<SocketAddr> {
    if let Ok(socket) = addr.parse::<SocketAddr>() {
        return Some(socket);
    }
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(addr)).await {
        Ok(Ok(mut addrs)) => addrs.next(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_resolve_at_once_and_names_in_the_background() {
        let resolver = Resolver::new();
        assert_eq!(
            resolver.resolve("127.0.0.1:7001"),
            Resolution::Ready("127.0.0.1:7001".parse().expect("addr"))
        );
        let mut changed = resolver.changed();
        assert_eq!(resolver.resolve("localhost:7001"), Resolution::Pending);
        tokio::time::timeout(Duration::from_secs(10), changed.changed())
            .await
            .expect("the lookup ends")
            .expect("resolver alive");
        match resolver.resolve("localhost:7001") {
            Resolution::Ready(socket) => assert_eq!(socket.port(), 7001),
            other => panic!("localhost resolved to {other:?}"),
        }
    }
}
