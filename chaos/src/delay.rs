//! Delay with jitter without tc netem (which the kernels this project runs on lack): an nftables rule in a
//! member's namespace queues every packet the member sends (`queue … bypass`) to a thread of the harness,
//! which holds each for the delay plus or minus the jitter before letting it go (NFQUEUE, through the `nfq`
//! crate's netlink socket, opened inside that namespace). Packets held past each other are reordered, as
//! with netem's jitter. When the thread stops it lets every held packet go.

use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::hosts::{self, HostError};
use crate::traffic::Rng;

/// A delaying thread for one member's namespace; stopped (every packet released) when dropped.
pub struct Delayer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Held {
    due: Instant,
    msg: nfq::Message,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        self.due == o.due
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    // Earliest due first out of the (max-)heap.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.due.cmp(&self.due)
    }
}

impl Delayer {
    /// Starts holding the packets queued to `queue` in namespace `ns` for `delay` ± `jitter`. Returns once
    /// the queue is bound (so the nftables rule that feeds it can go in right after).
    pub fn start(ns: &str, queue: u16, delay: Duration, jitter: Duration, seed: u64) -> Result<Delayer, HostError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (ns2, stop2) = (ns.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            let q = hosts::enter(&ns2).map_err(|e| e.to_string()).and_then(|()| bind(queue).map_err(|e| e.to_string()));
            match q {
                Ok(q) => {
                    let _ = ready_tx.send(Ok(()));
                    hold(q, delay, jitter, Rng::new(seed), &stop2);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
        let command = format!("NFQUEUE {queue} in {ns}");
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Delayer { stop, thread: Some(thread) }),
            Ok(Err(e)) => Err(HostError::Command { command, stderr: e }),
            Err(_) => Err(HostError::Command { command, stderr: "the delaying thread died".into() }),
        }
    }
}

fn bind(queue: u16) -> std::io::Result<nfq::Queue> {
    let mut q = nfq::Queue::open()?;
    q.bind(queue)?;
    // Only the metadata: the packets go back unchanged.
    q.set_copy_range(queue, 0)?;
    q.set_queue_max_len(queue, 8192)?;
    q.set_fail_open(queue, true)?;
    q.set_nonblocking(true);
    Ok(q)
}

fn hold(mut q: nfq::Queue, delay: Duration, jitter: Duration, mut rng: Rng, stop: &AtomicBool) {
    let mut held: BinaryHeap<Held> = BinaryHeap::new();
    let spread = jitter.as_micros() as u64;
    while !stop.load(Ordering::Relaxed) {
        // Non-blocking: an error is "nothing more queued for now".
        while let Ok(mut msg) = q.recv() {
            msg.set_verdict(nfq::Verdict::Accept);
            let wobble = rng.below(2 * spread + 1);
            let due = Instant::now() + delay + Duration::from_micros(wobble) - jitter;
            held.push(Held { due, msg });
        }
        let now = Instant::now();
        while held.peek().is_some_and(|h| h.due <= now) {
            let h = held.pop().expect("peeked");
            let _ = q.verdict(h.msg);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for h in held.into_vec() {
        let _ = q.verdict(h.msg);
    }
}

impl Drop for Delayer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
