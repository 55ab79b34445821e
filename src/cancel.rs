//! Cancellation shared by the signal handler, the stdin reader and the command being run.
//!
//! It only carries the fact "stop now"; what stopping means is up to each command.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// A cheap, cloneable cancellation flag. Blocking code polls [`Cancel::is_cancelled`];
/// async code awaits [`Cancel::cancelled`].
#[derive(Clone, Default, Debug)]
pub struct Cancel {
    inner: Arc<Inner>,
}

#[derive(Default, Debug)]
struct Inner {
    flag: AtomicBool,
    notify: Notify,
}

impl Cancel {
    /// A flag that is not set.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Sets the flag and wakes every waiter. Idempotent.
    pub fn cancel(&self) {
        self.inner.flag.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Whether [`Cancel::cancel`] has been called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// Resolves once the flag is set (immediately if it already is).
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_and_waiters() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let c = Cancel::new();
        assert!(!c.is_cancelled());
        let c2 = c.clone();
        rt.block_on(async move {
            let waiter = tokio::spawn(async move { c2.cancelled().await });
            tokio::task::yield_now().await;
            c.cancel();
            waiter.await.unwrap();
            assert!(c.is_cancelled());
            // Already cancelled: returns at once.
            c.cancelled().await;
        });
    }
}
