//! Small concurrency utilities: a set of tasks that can be waited for and
//! aborted, and a future wrapper that turns a panic into an error value.
//! (Cancellation is tokio-util's `CancellationToken`.)

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// Tasks spawned together so their owner can wait for all of them (`idle`) or
/// stop them (`abort_all`). Each task leaves the set when it ends or is dropped.
#[derive(Default)]
pub(crate) struct TaskSet {
    inner: Mutex<TaskSetInner>,
    idle: Arc<Notify>,
}

#[derive(Default)]
struct TaskSetInner {
    next_id: u64,
    tasks: BTreeMap<u64, AbortHandle>,
}

struct Member {
    set: Option<Arc<TaskSet>>,
    id: u64,
}

impl Drop for Member {
    fn drop(&mut self) {
        let set = self.set.take().expect("dropped once");
        let idle = set.idle.clone();
        let empty = {
            let mut inner = set.inner.lock().unwrap();
            inner.tasks.remove(&self.id);
            inner.tasks.is_empty()
        };
        // Let go of the set before waking its waiters: whoever waits for
        // `idle` may free everything at once (even exit the process).
        drop(set);
        if empty {
            idle.notify_waiters();
        }
    }
}

impl TaskSet {
    pub(crate) fn spawn<F>(self: &Arc<Self>, fut: F) -> AbortHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut inner = self.inner.lock().unwrap();
        let id = inner.next_id;
        inner.next_id += 1;
        let member = Member {
            set: Some(self.clone()),
            id,
        };
        // The lock is held across spawn so the member cannot leave before it joined.
        let handle = tokio::spawn(Tracked {
            fut,
            _member: member,
        })
        .abort_handle();
        inner.tasks.insert(id, handle.clone());
        handle
    }

    pub(crate) fn len(&self) -> usize {
        self.inner.lock().unwrap().tasks.len()
    }

    /// Resolves once no task is left.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.len() == 0 {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn abort_all(&self) {
        let handles: Vec<AbortHandle> =
            self.inner.lock().unwrap().tasks.values().cloned().collect();
        for h in handles {
            h.abort();
        }
    }
}

/// A task's future and its set membership. Fields drop in declaration order,
/// so the future and everything it captured are gone before the member leaves
/// the set: whoever waits for `idle` sees the task's resources released.
/// The future is held inline (not boxed): the task's own allocation is the
/// only one.
struct Tracked<F> {
    fut: F,
    _member: Member,
}

impl<F: Future<Output = ()>> Future for Tracked<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `fut` is structurally pinned: nothing moves it out of a
        // pinned `Tracked`, which has no `Drop` of its own.
        unsafe { self.map_unchecked_mut(|t| &mut t.fut) }.poll(cx)
    }
}

/// Polls a future, turning a panic into `Err(message)`.
pub(crate) struct CatchUnwind<F: ?Sized>(pub(crate) Pin<Box<F>>);

impl<F: Future + ?Sized> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(&*payload))),
        }
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn task_set_tracks_finished_and_aborted_tasks() {
        let set = Arc::new(TaskSet::default());
        let token = tokio_util::sync::CancellationToken::new();
        for _ in 0..3 {
            let t = token.clone();
            set.spawn(async move { t.cancelled().await });
        }
        set.spawn(std::future::pending());
        assert_eq!(set.len(), 4);
        token.cancel();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(set.len(), 1);
        set.abort_all();
        tokio::time::timeout(std::time::Duration::from_secs(1), set.idle())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn catch_unwind_reports_the_message() {
        let r = CatchUnwind(Box::pin(async { panic!("boom {}", 7) })).await;
        assert_eq!(r, Err::<(), _>("boom 7".to_string()));
    }
}
