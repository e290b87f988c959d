//! One memory account for everything peers can make us hold.
//!
//! The reader admits received bytes before it takes them from its buffer
//! (the gate); what they become is charged where it is kept: unread
//! messages, packets assembled from several frames, pending invokes, queued
//! writes. A large read batch handed on without a copy stays charged as the
//! whole buffer until its last message is freed ([`charged`]).
//!
//! A [`MemoryBudget`] is shared by every connection of a `Server` (or of a
//! `Pool`); each connection has an [`Account`] inside it. Every buffer a peer
//! can grow goes through its connection's account: the read buffer and a
//! large frame being received, packets being assembled, pending invokes and
//! their metadata, unread messages, queued writes, and a fixed charge per
//! connection and per stream. Charges that already happened are always
//! counted; growth is gated *before* it happens by [`Account::has_room`]: the
//! reader stops reading (TCP back-pressure), senders wait, and a server
//! refuses new streams with ResourceExhausted.
//!
//! Fairness: a connection may hold at most its share (the per-connection
//! limit). Once the budget is nearly full (all but its last eighth), only
//! connections holding less than a small guaranteed amount may still grow, so
//! the connections holding the most stop first and a well-behaved client on a
//! new connection is still served while others flood.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// Default memory budget of a server (or a pool), over all its connections.
pub const DEFAULT_MEMORY_BUDGET: usize = 256 << 20;

/// What a connection may grow to beyond its fixed memory while the budget is
/// nearly full, at most; with many connections each gets less, so that
/// together they fill at most half of the kept-back part.
const GUARANTEED_PER_CONNECTION: usize = 256 << 10;

/// A connection's fixed memory (structures and its first read buffer).
const FIXED_PER_CONNECTION: usize = CONNECTION_OVERHEAD + (16 << 10);

/// Fixed charge per connection (structures, tasks) besides its read buffer.
pub(crate) const CONNECTION_OVERHEAD: usize = 8 << 10;

/// Fixed charge per open stream: its state, registry entry and handler task
/// (a sleeping handler with a timer and a decoded request measures ~2.5 KiB
/// of RSS in the hostile suite).
pub(crate) const STREAM_OVERHEAD: usize = 3 << 10;

/// Fixed charge per incomplete invoke on a server.
pub(crate) const PENDING_INVOKE_OVERHEAD: usize = 512;

/// A memory budget shared by many connections. Cheap to clone; clones share
/// the same account.
#[derive(Clone)]
pub struct MemoryBudget {
    inner: Arc<BudgetInner>,
}

struct BudgetInner {
    limit: usize,
    used: AtomicUsize,
    /// Tasks waiting in `Account::room`; releases notify only when non-zero.
    waiters: AtomicUsize,
    /// Connections counted in this budget.
    accounts: AtomicUsize,
    freed: Notify,
}

impl MemoryBudget {
    /// A budget of `limit` bytes (0 means no limit).
    pub fn new(limit: usize) -> MemoryBudget {
        let limit = if limit == 0 { usize::MAX } else { limit };
        MemoryBudget {
            inner: Arc::new(BudgetInner {
                limit,
                used: AtomicUsize::new(0),
                waiters: AtomicUsize::new(0),
                accounts: AtomicUsize::new(0),
                freed: Notify::new(),
            }),
        }
    }

    /// The limit in bytes (`usize::MAX` when unlimited).
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Bytes currently held over every connection sharing this budget.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// The part of the budget any connection may fill; the rest is kept for
    /// connections under their guaranteed amount.
    fn bulk_limit(&self) -> usize {
        let limit = self.inner.limit;
        limit - limit / 8
    }

    /// What one connection may hold while the budget is past its bulk limit.
    fn guaranteed(&self) -> usize {
        let kept_back = self.inner.limit / 8;
        let connections = self.inner.accounts.load(Ordering::Relaxed).max(1);
        FIXED_PER_CONNECTION + GUARANTEED_PER_CONNECTION.min(kept_back / (2 * connections))
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget::new(DEFAULT_MEMORY_BUDGET)
    }
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("limit", &self.limit())
            .field("used", &self.used())
            .finish()
    }
}

/// One connection's part of a budget.
pub(crate) struct Account {
    budget: MemoryBudget,
    held: AtomicUsize,
    /// Most this connection may hold (its fair share).
    share: usize,
}

impl Account {
    pub(crate) fn new(budget: MemoryBudget, share: usize) -> Account {
        budget.inner.accounts.fetch_add(1, Ordering::Relaxed);
        Account {
            budget,
            held: AtomicUsize::new(0),
            share: share.max(1),
        }
    }

    /// Bytes this connection holds.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Counts `n` bytes that are (or are about to be) held.
    pub(crate) fn charge(&self, n: usize) {
        if n > 0 {
            self.held.fetch_add(n, Ordering::Relaxed);
            self.budget.inner.used.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Returns `n` bytes charged earlier.
    pub(crate) fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.held.fetch_sub(n, Ordering::Relaxed);
        self.budget.inner.used.fetch_sub(n, Ordering::Relaxed);
        if self.budget.inner.waiters.load(Ordering::SeqCst) > 0 {
            self.budget.inner.freed.notify_waiters();
        }
    }

    /// Follows a holding going from `before` to `after` bytes.
    pub(crate) fn adjust(&self, before: usize, after: usize) {
        if after > before {
            self.charge(after - before);
        } else {
            self.release(before - after);
        }
    }

    /// The most the whole budget may hold for this connection to grow by
    /// `n`, or `None` if its share does not allow it.
    fn ceiling(&self, n: usize) -> Option<usize> {
        let held = self.held();
        if held + n > self.share && held > 0 {
            return None;
        }
        Some(if held + n <= self.budget.guaranteed() {
            self.budget.limit()
        } else {
            self.budget.bulk_limit()
        })
    }

    /// Whether this connection may grow by `n` bytes now.
    pub(crate) fn has_room(&self, n: usize) -> bool {
        let used = self.budget.used();
        // A single item larger than the budget still passes alone.
        self.ceiling(n).is_some_and(|ceiling| {
            (used == 0 && self.held() == 0) || used.saturating_add(n) <= ceiling
        })
    }

    /// Charges `n` bytes if this connection may grow by them now; the check
    /// and the charge are one atomic step, so racing connections cannot
    /// together pass the limit.
    pub(crate) fn try_charge(&self, n: usize) -> bool {
        let Some(ceiling) = self.ceiling(n) else {
            return false;
        };
        let used = &self.budget.inner.used;
        let alone = self.held() == 0;
        let mut current = used.load(Ordering::Relaxed);
        loop {
            if !(alone && current == 0) && current.saturating_add(n) > ceiling {
                return false;
            }
            match used.compare_exchange_weak(
                current,
                current + n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        self.held.fetch_add(n, Ordering::Relaxed);
        true
    }

    /// Whether `n` more bytes fit in the whole budget. Senders check this
    /// (not the share): what they queue is bounded by the writer's cap, and
    /// holding them to the share could deadlock a peer that reads only
    /// after it has sent.
    pub(crate) fn budget_has_room(&self, n: usize) -> bool {
        let used = self.budget.used();
        used == 0 || used.saturating_add(n) <= self.budget.limit()
    }

    /// Waits until `n` more bytes fit in the whole budget.
    pub(crate) async fn budget_room(&self, n: usize) {
        self.wait_until(|| self.budget_has_room(n)).await
    }

    /// Waits until this connection may grow by `n` bytes.
    pub(crate) async fn room(&self, n: usize) {
        self.wait_until(|| self.has_room(n)).await
    }

    async fn wait_until(&self, ready: impl Fn() -> bool) {
        let inner = &self.budget.inner;
        while !ready() {
            let notified = inner.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let _waiting = Waiting::new(&inner.waiters);
            if ready() {
                return;
            }
            // A release on another budget user may not notify in a rare race
            // between its check of `waiters` and our increment; re-check now and then.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(100), notified).await;
        }
    }
}

/// Received bytes that stay charged to their connection's account for as
/// long as any slice of them is alive: the memory is released to the budget
/// exactly when it is freed, however long the application keeps a message.
struct Charged {
    bytes: bytes::Bytes,
    charge: usize,
    account: Arc<Account>,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Charged {
    fn drop(&mut self) {
        self.account.release(self.charge);
    }
}

/// `bytes`, holding `charge` bytes (already charged to `account`) until the
/// last slice of the result is dropped.
pub(crate) fn charged(bytes: bytes::Bytes, charge: usize, account: &Arc<Account>) -> bytes::Bytes {
    bytes::Bytes::from_owner(Charged {
        bytes,
        charge,
        account: account.clone(),
    })
}

impl Drop for Account {
    fn drop(&mut self) {
        // Whatever is still counted leaves with the connection.
        let held = *self.held.get_mut();
        self.release(held);
        self.budget.inner.accounts.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a waiter while it waits (also when its future is dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(counter: &'a AtomicUsize) -> Waiting<'a> {
        counter.fetch_add(1, Ordering::SeqCst);
        Waiting(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_held_to_its_share() {
        let budget = MemoryBudget::new(100 << 20);
        let a = Account::new(budget.clone(), 1 << 20);
        assert!(a.has_room(1 << 20));
        a.charge(1 << 20);
        assert!(!a.has_room(1));
        a.release(1 << 20);
        assert!(a.has_room(1));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_full_budget_stops_the_largest_holders_first() {
        let budget = MemoryBudget::new(8 << 20);
        let big = Account::new(budget.clone(), 64 << 20);
        big.charge(7 << 20); // the bulk limit
        assert!(!big.has_room(1), "a large holder stops at the bulk limit");
        let small = Account::new(budget.clone(), 64 << 20);
        assert!(
            small.has_room(4096),
            "a new connection may still grow a little"
        );
        small.charge(budget.guaranteed());
        assert!(!small.has_room(1));
        drop(big);
        assert!(small.has_room(1));
        drop(small);
        assert_eq!(
            budget.used(),
            0,
            "accounts return what they hold when dropped"
        );
    }

    #[test]
    fn never_past_the_limit() {
        let budget = MemoryBudget::new(1 << 20);
        let accounts: Vec<Account> = (0..16)
            .map(|_| Account::new(budget.clone(), usize::MAX))
            .collect();
        for a in &accounts {
            while a.has_room(1000) {
                a.charge(1000);
            }
        }
        assert!(budget.used() <= budget.limit());
    }

    #[test]
    fn racing_charges_never_pass_the_limit() {
        let budget = MemoryBudget::new(4 << 20);
        let accounts: Vec<Arc<Account>> = (0..8)
            .map(|_| Arc::new(Account::new(budget.clone(), usize::MAX)))
            .collect();
        let threads: Vec<_> = accounts
            .iter()
            .cloned()
            .map(|a| std::thread::spawn(move || while a.try_charge(1000) {}))
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            budget.used() <= budget.limit(),
            "{} > {}",
            budget.used(),
            budget.limit()
        );
    }

    #[tokio::test]
    async fn room_waits_for_a_release() {
        let budget = MemoryBudget::new(64 << 20);
        let a = Arc::new(Account::new(budget.clone(), 1 << 20));
        a.charge(1 << 20);
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.room(100).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        a.release(1000);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
