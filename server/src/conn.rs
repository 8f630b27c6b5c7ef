//! What keeps one client from holding connections it does not use: the
//! per-address connection count, and each connection's idle watchdog.
//!
//! hyper closes an HTTP/1.1 connection that waits longer than the header
//! timeout for the next request's headers (its header timer also runs
//! between keep-alive requests), but has no idle timeout for HTTP/2: after
//! the preface, a connection with no stream stays open for ever. So every
//! connection, of either protocol, gets a watchdog that reads an
//! [`Activity`] kept by the service wrapper and the response bodies, and
//! asks the connection to shut down gracefully once it has been idle for the
//! idle timeout; if the connection is still open and idle a grace period
//! later (a peer that never reads, or never acknowledges the GOAWAY), it is
//! dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, SizeHint};

/// Open connections per client address, bounded. An address's entry exists
/// only while it has a connection open, so the table holds at most as many
/// entries as there are open connections.
#[derive(Debug)]
pub struct AddressSlots {
    /// Most connections one address may hold.
    max: u32,
    /// Open connections per address; never holds a zero.
    counts: parking_lot::Mutex<HashMap<IpAddr, u32>>,
}

/// One open connection's place in its address's count; dropping it gives
/// the place back.
#[derive(Debug)]
pub struct AddressSlot {
    slots: Arc<AddressSlots>,
    ip: IpAddr,
}

impl AddressSlots {
    pub fn new(max: u32) -> Arc<AddressSlots> {
        Arc::new(AddressSlots {
            max,
            counts: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// A place for a new connection from `ip`, or `None` when that address
    /// already holds the most it may.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        // An IPv4 client reached over a dual-stack socket is the same
        // client as over IPv4.
        let ip = ip.to_canonical();
        let mut counts = self.counts.lock();
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.max {
            if *count == 0 {
                counts.remove(&ip);
            }
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            slots: self.clone(),
            ip,
        })
    }

    /// Addresses with an open connection.
    pub fn addresses(&self) -> usize {
        self.counts.lock().len()
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.slots.counts.lock();
        let count = counts
            .get_mut(&self.ip)
            .expect("an address with an open slot has an entry");
        *count -= 1;
        if *count == 0 {
            counts.remove(&self.ip);
        }
    }
}

/// A connection's signs of life, kept by its service (requests being
/// handled) and its response bodies (bytes leaving), read by its watchdog.
#[derive(Debug)]
pub struct Activity {
    /// What `last_ms` counts from.
    origin: Instant,
    /// Requests inside their handler (each bounded by the request timeout).
    handling: AtomicUsize,
    /// Milliseconds from `origin` to the last sign of life.
    last_ms: AtomicU64,
}

/// A request inside its handler; dropping it (the handler finished, or its
/// stream was reset and the future dropped) ends that.
#[derive(Debug)]
pub struct Handling(Arc<Activity>);

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            origin: Instant::now(),
            handling: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        })
    }

    /// Records a sign of life now.
    pub fn touch(&self) {
        let now = self.origin.elapsed().as_millis() as u64;
        // Relaxed: the watchdog only needs to see some recent value; a stale
        // one can only make it wake up and look again, and `fetch_max`
        // keeps a slow writer from moving the time backwards.
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// Marks a request as being handled until the guard drops.
    pub fn begin(self: &Arc<Self>) -> Handling {
        // Relaxed: the count is a hint for the watchdog, which at worst
        // shuts a connection down gracefully just as a request starts, and
        // a graceful shutdown lets that request finish.
        self.handling.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Handling(self.clone())
    }

    /// How long the connection has been idle: `None` while a request is
    /// being handled.
    fn idle_for(&self) -> Option<Duration> {
        // Relaxed: see `begin`.
        if self.handling.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let now = self.origin.elapsed().as_millis() as u64;
        let last = self.last_ms.load(Ordering::Relaxed);
        Some(Duration::from_millis(now.saturating_sub(last)))
    }

    /// Resolves once no request has been handled and no response byte has
    /// left for `timeout`.
    pub async fn idle(&self, timeout: Duration) {
        loop {
            let wait = match self.idle_for() {
                Some(idle) if idle >= timeout => return,
                Some(idle) => timeout - idle,
                // A handler ends within the request timeout; look again
                // a whole period later rather than being woken per request.
                None => timeout,
            };
            tokio::time::sleep(wait).await;
        }
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.touch();
        // Relaxed: see `Activity::begin`.
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that reports each frame it yields as a sign of life, so
/// a long download the client keeps reading is not idle, and one it stopped
/// reading is.
pub struct Watched<B> {
    inner: B,
    activity: Arc<Activity>,
}

impl<B> Watched<B> {
    pub fn new(inner: B, activity: Arc<Activity>) -> Watched<B> {
        Watched { inner, activity }
    }
}

impl<B: Body + Unpin> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_ready() {
            self.activity.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_slots_and_leaves_no_entry_behind() {
        let slots = AddressSlots::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let first = slots.take(a).unwrap();
        // The same client over a dual-stack socket counts as the same.
        let second = slots.take(mapped).unwrap();
        assert!(
            slots.take(a).is_none(),
            "a third connection from one address"
        );
        let other = slots.take(b).unwrap();
        assert_eq!(slots.addresses(), 2);
        drop(first);
        let again = slots
            .take(a)
            .expect("a closed connection gives its slot back");
        drop((second, again, other));
        assert_eq!(
            slots.addresses(),
            0,
            "entries of idle addresses are removed"
        );
    }
}
