//! Wakes long-polling `wait` calls when an approval is decided, without a busy loop.
//!
//! Each approval someone waits on has one `Notify`; the map holds it weakly, so it lives
//! exactly as long as its waiters. A decision in this process wakes them at once; with
//! several replicas a decision taken elsewhere is seen by the waiter's periodic re-read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Waiters {
    map: Mutex<HashMap<String, Weak<Notify>>>,
}

/// A waiter's handle; dropping the last handle of an approval removes its map entry.
pub struct WaitHandle<'a> {
    waiters: &'a Waiters,
    id: String,
    notify: Arc<Notify>,
}

impl WaitHandle<'_> {
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for WaitHandle<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.waiters.map.lock() {
            // Only this handle still holds the Notify: nobody else waits on this id.
            if Arc::strong_count(&self.notify) == 1 {
                map.remove(&self.id);
            }
        }
    }
}

impl Waiters {
    /// Registers interest in `id`. Call `notify().notified()` and `enable()` the future
    /// before re-reading the status, so a decision between the read and the await is
    /// not missed.
    pub fn subscribe(&self, id: &str) -> WaitHandle<'_> {
        let notify = match self.map.lock() {
            Ok(mut map) => {
                if let Some(existing) = map.get(id).and_then(Weak::upgrade) {
                    existing
                } else {
                    let n = Arc::new(Notify::new());
                    map.insert(id.to_string(), Arc::downgrade(&n));
                    n
                }
            }
            // A poisoned lock only means another thread panicked mid-update; fall back to
            // a private Notify and rely on the periodic re-read.
            Err(_) => Arc::new(Notify::new()),
        };
        WaitHandle { waiters: self, id: id.to_string(), notify }
    }

    /// Wakes every current waiter on `id`.
    pub fn wake(&self, id: &str) {
        let notify = self.map.lock().ok().and_then(|m| m.get(id).and_then(Weak::upgrade));
        if let Some(n) = notify {
            n.notify_waiters();
        }
    }

    /// Number of approvals with live waiters (for tests and metrics).
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wake_releases_a_subscribed_waiter() {
        let w = Arc::new(Waiters::default());
        let w2 = Arc::clone(&w);
        let task = tokio::spawn(async move {
            let h = w2.subscribe("a");
            let fut = h.notify().notified();
            tokio::pin!(fut);
            fut.as_mut().enable();
            tokio::time::timeout(Duration::from_secs(5), fut).await.is_ok()
        });
        // Let the waiter register before waking it.
        while w.is_empty() {
            tokio::task::yield_now().await;
        }
        w.wake("a");
        assert!(task.await.unwrap(), "waiter was not woken");
    }

    #[test]
    fn entries_disappear_with_their_last_waiter() {
        let w = Waiters::default();
        let a = w.subscribe("x");
        let b = w.subscribe("x");
        assert_eq!(w.len(), 1);
        drop(a);
        assert_eq!(w.len(), 1);
        drop(b);
        assert_eq!(w.len(), 0);
    }
}
