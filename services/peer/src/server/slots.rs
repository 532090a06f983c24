//! Upload slots shared fairly between source addresses.
//!
//! One address holds at most `per_addr` slots of the `total`, so a single
//! client (or everything behind one address) cannot take them all. A
//! request that finds no slot it may take waits, for a bounded time, in
//! its address's queue; a freed slot goes to the next address in turn
//! (round robin over the addresses waiting, FIFO within one), skipping any
//! address already at its share. Queues are bounded too: an address may
//! have at most `per_addr` requests waiting, and all addresses together
//! `total`; past that, or once the wait is over, the request is refused
//! (RESOURCE_EXHAUSTED: the fetch engine then asks another holder, or this
//! one again shortly).
//!
//! No crate offers a keyed fair semaphore of this shape; it is one mutex
//! over a few maps, never held across an await.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::sync::oneshot;

/// The slots: a cheap, shared handle.
#[derive(Clone)]
pub struct Slots(Arc<Inner>);

struct Inner {
    total: usize,
    per_addr: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    used: usize,
    holding: HashMap<IpAddr, usize>,
    waiting: HashMap<IpAddr, VecDeque<(u64, oneshot::Sender<Slot>)>>,
    /// Addresses with requests waiting, in the order they get a slot.
    turn: VecDeque<IpAddr>,
    queued: usize,
    next_id: u64,
}

/// One upload slot, given back when dropped.
pub struct Slot {
    slots: Option<Arc<Inner>>,
    addr: IpAddr,
}

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue was full, or waiting was not allowed.
    Full,
    /// The request waited as long as allowed.
    Waited,
}

/// What the slots are doing, for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub used: usize,
    pub queued: usize,
}

impl Slots {
    /// `total` slots, at most `per_addr` (at least 1) for one address.
    pub fn new(total: usize, per_addr: usize) -> Self {
        Self(Arc::new(Inner {
            total,
            per_addr: per_addr.clamp(1, total.max(1)),
            state: Mutex::default(),
        }))
    }

    /// A slot for a request from `addr`, waiting up to `wait` for one.
    pub async fn acquire(&self, addr: IpAddr, wait: Duration) -> Result<Slot, Refused> {
        let (id, mut rx) = {
            let mut s = self.0.lock();
            if s.used < self.0.total && s.holds(addr) < self.0.per_addr {
                return Ok(s.grant(&self.0, addr));
            }
            let queue_len = s.waiting.get(&addr).map_or(0, VecDeque::len);
            if wait.is_zero() || queue_len >= self.0.per_addr || s.queued >= self.0.total {
                return Err(Refused::Full);
            }
            s.enqueue(addr)
        };
        // Declared after `rx`, so dropped first: once it has left the queue
        // no slot can be sent, and one sent before is dropped with `rx`
        // (given back) or taken below.
        let _queued = Dequeue {
            inner: &self.0,
            addr,
            id,
        };
        match tokio::time::timeout(wait, &mut rx).await {
            Ok(Ok(slot)) => Ok(slot),
            _ => {
                drop(_queued);
                rx.try_recv().map_err(|_| Refused::Waited)
            }
        }
    }

    pub fn usage(&self) -> Usage {
        let s = self.0.lock();
        Usage {
            used: s.used,
            queued: s.queued,
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change below is made whole under the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives `addr`'s slot back, and hands free slots to waiters in turn.
    fn release(self: &Arc<Self>, addr: IpAddr) {
        let mut s = self.lock();
        s.used -= 1;
        match s.holding.get_mut(&addr) {
            Some(1) | None => {
                s.holding.remove(&addr);
            }
            Some(n) => *n -= 1,
        }
        while s.used < self.total {
            let Some(next) = s.next_turn(self.per_addr) else {
                return;
            };
            let (_, tx) = s.pop_waiter(next);
            if tx.is_closed() {
                continue;
            }
            let slot = s.grant(self, next);
            if let Err(mut slot) = tx.send(slot) {
                // The waiter left just now: take the slot back by hand
                // (dropping it would lock again).
                slot.slots = None;
                s.ungrant(next);
            }
        }
    }
}

impl State {
    fn holds(&self, addr: IpAddr) -> usize {
        self.holding.get(&addr).copied().unwrap_or(0)
    }

    fn grant(&mut self, inner: &Arc<Inner>, addr: IpAddr) -> Slot {
        self.used += 1;
        *self.holding.entry(addr).or_default() += 1;
        Slot {
            slots: Some(inner.clone()),
            addr,
        }
    }

    fn ungrant(&mut self, addr: IpAddr) {
        self.used -= 1;
        match self.holding.get_mut(&addr) {
            Some(1) | None => {
                self.holding.remove(&addr);
            }
            Some(n) => *n -= 1,
        }
    }

    fn enqueue(&mut self, addr: IpAddr) -> (u64, oneshot::Receiver<Slot>) {
        let (tx, rx) = oneshot::channel();
        let id = self.next_id;
        self.next_id += 1;
        let queue = self.waiting.entry(addr).or_default();
        if queue.is_empty() {
            self.turn.push_back(addr);
        }
        queue.push_back((id, tx));
        self.queued += 1;
        (id, rx)
    }

    /// The next address in turn that may take a slot; it goes to the back
    /// of the turn if it has more requests waiting.
    fn next_turn(&mut self, per_addr: usize) -> Option<IpAddr> {
        let at = self.turn.iter().position(|a| self.holds(*a) < per_addr)?;
        self.turn.remove(at)
    }

    fn pop_waiter(&mut self, addr: IpAddr) -> (u64, oneshot::Sender<Slot>) {
        let queue = self
            .waiting
            .get_mut(&addr)
            .expect("an address in turn waits");
        let waiter = queue.pop_front().expect("an address in turn waits");
        if queue.is_empty() {
            self.waiting.remove(&addr);
        } else {
            self.turn.push_back(addr);
        }
        self.queued -= 1;
        waiter
    }

    fn remove_waiter(&mut self, addr: IpAddr, id: u64) {
        let Some(queue) = self.waiting.get_mut(&addr) else {
            return;
        };
        let Some(at) = queue.iter().position(|(i, _)| *i == id) else {
            return;
        };
        queue.remove(at);
        self.queued -= 1;
        if queue.is_empty() {
            self.waiting.remove(&addr);
            self.turn.retain(|a| *a != addr);
        }
    }
}

/// Takes a waiting request out of its queue, however its wait ends.
struct Dequeue<'a> {
    inner: &'a Arc<Inner>,
    addr: IpAddr,
    id: u64,
}

impl Drop for Dequeue<'_> {
    fn drop(&mut self) {
        self.inner.lock().remove_waiter(self.addr, self.id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(inner) = self.slots.take() {
            inner.release(self.addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    const NOW: Duration = Duration::ZERO;
    const WAIT: Duration = Duration::from_secs(2);

    #[tokio::test(start_paused = true)]
    async fn one_address_gets_only_its_share() {
        let slots = Slots::new(4, 2);
        let a: Vec<_> = [
            slots.acquire(ip(1), NOW).await,
            slots.acquire(ip(1), NOW).await,
        ]
        .into_iter()
        .map(Result::unwrap)
        .collect();
        assert_eq!(slots.acquire(ip(1), NOW).await.err(), Some(Refused::Full));
        // Others still get the rest.
        let b = slots.acquire(ip(2), NOW).await.unwrap();
        let c = slots.acquire(ip(3), NOW).await.unwrap();
        assert_eq!(slots.acquire(ip(4), NOW).await.err(), Some(Refused::Full));
        assert_eq!(slots.usage(), Usage { used: 4, queued: 0 });
        drop((a, b, c));
        assert_eq!(slots.usage(), Usage::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_a_freed_slot_or_is_refused_after_its_wait() {
        let slots = Slots::new(1, 1);
        let held = slots.acquire(ip(1), NOW).await.unwrap();
        let waiter = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(ip(2), WAIT).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(slots.usage(), Usage { used: 1, queued: 1 });
        drop(held);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(slots.usage(), Usage::default());

        let held = slots.acquire(ip(1), NOW).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(
            slots.acquire(ip(2), WAIT).await.err(),
            Some(Refused::Waited)
        );
        assert_eq!(started.elapsed(), WAIT);
        assert_eq!(slots.usage(), Usage { used: 1, queued: 0 });
        drop(held);
    }

    /// Freed slots go round the addresses waiting, not to whoever asked
    /// most: of two waiters from one address and one from another, the
    /// second slot freed goes to the other address.
    #[tokio::test(start_paused = true)]
    async fn freed_slots_go_round_the_waiting_addresses() {
        let slots = Slots::new(4, 2);
        let mut held = Vec::new();
        for who in [9, 9, 8, 8] {
            held.push(slots.acquire(ip(who), NOW).await.unwrap());
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for who in [1, 1, 2] {
            let (slots, tx) = (slots.clone(), tx.clone());
            tokio::spawn(async move {
                let slot = slots.acquire(ip(who), Duration::from_secs(60)).await;
                let _ = tx.send((who, slot));
            });
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(slots.usage(), Usage { used: 4, queued: 3 });
        let mut order = Vec::new();
        let mut got = Vec::new();
        for _ in 0..2 {
            drop(held.pop());
            let (who, slot) = rx.recv().await.unwrap();
            order.push(who);
            got.push(slot.unwrap());
        }
        assert_eq!(order, [1, 2]);
        // The last waiter (127.0.0.1's second) gets the next slot freed.
        drop(got.pop());
        assert_eq!(rx.recv().await.unwrap().0, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_goes_away_leaves_nothing_behind() {
        let slots = Slots::new(1, 1);
        let held = slots.acquire(ip(1), NOW).await.unwrap();
        let gone = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(ip(2), WAIT).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        gone.abort();
        let _ = gone.await;
        assert_eq!(slots.usage(), Usage { used: 1, queued: 0 });
        drop(held);
        assert_eq!(slots.usage(), Usage::default());
        assert!(slots.acquire(ip(3), NOW).await.is_ok());
    }
}
