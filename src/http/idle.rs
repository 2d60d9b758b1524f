//! Connection idle timeouts (`common_http_protocol_options.idle_timeout`)
//! without a timer per connection.
//!
//! Why: a tokio timer registered earlier than the time driver's next
//! wake-up makes the driver write its eventfd (an `unpark`), even from the
//! worker's own thread. With a 1 h idle timer on every connection, every
//! request's route timeout (15 s) was such a timer: `strace` showed 0.1 to
//! 0.4 eventfd writes per proxied request, and an A/B on the bench measured
//! ~8% more CPU per request than without idle timers.
//!
//! Instead, an idle connection puts its deadline and waker in its worker's
//! set, and one sweeper task per worker wakes those past their deadline
//! once a second (so the timeout fires up to a second late). Entering and
//! leaving the set is a slot in a vector: no syscall, no timer.

use std::cell::RefCell;
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

/// How often the sweeper looks at the set.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct IdleSet {
    entries: Vec<Option<(Instant, Waker)>>,
    free: Vec<usize>,
    live: usize,
    sweeping: bool,
}

thread_local! {
    static IDLE: RefCell<IdleSet> = RefCell::new(IdleSet::default());
}

/// A connection's place in its worker's idle set, left when dropped.
#[derive(Default)]
pub struct IdleEntry(Option<usize>);

impl IdleEntry {
    /// Enters the set (or updates the deadline) until `deadline`; `waker`
    /// is woken once it has passed.
    pub fn arm(&mut self, deadline: Instant, waker: &Waker) {
        IDLE.with(|set| {
            let mut set = set.borrow_mut();
            match self.0 {
                Some(key) => {
                    if let Some(Some((d, w))) = set.entries.get_mut(key) {
                        *d = deadline;
                        if !w.will_wake(waker) {
                            *w = waker.clone();
                        }
                    }
                }
                None => {
                    let entry = Some((deadline, waker.clone()));
                    let key = match set.free.pop() {
                        Some(k) => {
                            set.entries[k] = entry;
                            k
                        }
                        None => {
                            set.entries.push(entry);
                            set.entries.len() - 1
                        }
                    };
                    set.live += 1;
                    self.0 = Some(key);
                    if !set.sweeping {
                        set.sweeping = true;
                        tokio::spawn(sweep());
                    }
                }
            }
        });
    }

    /// Leaves the set.
    pub fn disarm(&mut self) {
        if let Some(key) = self.0.take() {
            IDLE.with(|set| {
                let mut set = set.borrow_mut();
                if let Some(slot) = set.entries.get_mut(key) {
                    *slot = None;
                    set.free.push(key);
                    set.live -= 1;
                }
            });
        }
    }
}

impl Drop for IdleEntry {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// Wakes the connections past their deadline, once a second, while any
/// connection of this worker is in the set.
async fn sweep() {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let due: Vec<Waker> = IDLE.with(|set| {
            let mut set = set.borrow_mut();
            if set.live == 0 {
                set.sweeping = false;
                return Vec::new();
            }
            let now = Instant::now();
            set.entries
                .iter()
                .flatten()
                .filter(|(deadline, _)| *deadline <= now)
                .map(|(_, w)| w.clone())
                .collect()
        });
        // Woken outside the borrow: a woken task may run its Drop (leaving
        // the set) only later, but never while the set is borrowed here.
        for w in due {
            w.wake();
        }
        if !IDLE.with(|set| set.borrow().sweeping) {
            return;
        }
    }
}
