//! A flag that tasks wait for, woken in the order they began to wait. A tokio watch channel would do, but it spreads
//! its waiters over several queues picked at random, so tasks it wakes together run in a different order every time
//! - which the deterministic simulation cannot have.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Flag {
    set: AtomicBool,
    notify: Notify,
}

impl Flag {
    pub fn new(set: bool) -> Self {
        Flag {
            set: AtomicBool::new(set),
            notify: Notify::new(),
        }
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        self.set.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Waits until the flag is set (at once if it is).
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn waiters_wake_when_the_flag_is_set_and_later_ones_do_not_wait() {
        let flag = Arc::new(Flag::new(false));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..4 {
            let (flag, order) = (flag.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                flag.wait().await;
                order.lock().unwrap().push(i);
            }));
        }
        tokio::task::yield_now().await;
        assert!(order.lock().unwrap().is_empty());
        flag.set();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(order.lock().unwrap().len(), 4);
        flag.wait().await;
        assert!(flag.is_set());
    }
}
