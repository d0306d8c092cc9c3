//! Freeing a session's replaced state off the event's path.
//!
//! After an event, the state it replaced (the previous cluster model, the previous
//! artifacts, the previous plan) is only freed. Freeing it in line was a tenth of a Service
//! endpoint event on the session bench's node, after the event's operations were already
//! known. A [`Dropper`] hands it to a thread of its own instead, so that the operations
//! reach the caller (pipecd, which writes them to the device) first.
//!
//! At most one value is being freed at a time: the hand-over is a rendezvous, which waits
//! until the thread has finished freeing the last value. Memory so stays bounded by one
//! replaced state beside the live one, and only while the next event begins.

use std::sync::mpsc::{self, SyncSender};
use std::thread::JoinHandle;

/// A value to free.
type Garbage = Box<dyn Send>;

/// Frees values on a thread of its own, started on first use (a session that takes no
/// event never starts it). Dropping the `Dropper` waits until everything is freed.
#[derive(Default)]
pub(super) struct Dropper {
    worker: Option<Worker>,
}

struct Worker {
    /// A rendezvous channel: a send returns once the thread has taken the value, which it
    /// does only after freeing the previous one.
    give: SyncSender<Garbage>,
    thread: JoinHandle<()>,
}

impl Worker {
    /// The freeing thread; `None` when no thread can be started (values are then freed
    /// in line).
    fn start() -> Option<Worker> {
        let (give, take) = mpsc::sync_channel::<Garbage>(0);
        let thread = std::thread::Builder::new()
            .name("pipec-free".into())
            .spawn(move || take.into_iter().for_each(drop))
            .ok()?;
        Some(Worker { give, thread })
    }
}

impl Dropper {
    /// Frees `value` on the thread, after the value handed over before it.
    pub(super) fn free(&mut self, value: impl Send + 'static) {
        if self.worker.is_none() {
            self.worker = Worker::start();
        }
        let Some(worker) = &self.worker else {
            return drop(value);
        };
        // The thread ends only when a value's own `Drop` panics; the value is then freed
        // here, and so is every later one.
        if let Err(mpsc::SendError(value)) = worker.give.send(Box::new(value)) {
            self.worker = None;
            drop(value);
        }
    }
}

impl Drop for Dropper {
    fn drop(&mut self) {
        if let Some(Worker { give, thread }) = self.worker.take() {
            drop(give);
            // A panic of a value's `Drop` was reported on its thread already.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Counts its drops and names the thread that dropped it.
    struct Counted(Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>);

    impl Drop for Counted {
        fn drop(&mut self) {
            let name = std::thread::current().name().unwrap_or("").to_string();
            self.1.lock().expect("not poisoned").push(name);
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn every_value_is_freed_on_the_thread_before_the_dropper_is_gone() {
        let count = Arc::new(AtomicUsize::new(0));
        let names = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut dropper = Dropper::default();
        for _ in 0..5 {
            dropper.free(Counted(count.clone(), names.clone()));
        }
        drop(dropper);
        assert_eq!(count.load(Ordering::SeqCst), 5);
        let names = names.lock().expect("not poisoned");
        assert!(names.iter().all(|n| n == "pipec-free"), "{names:?}");
    }
}
