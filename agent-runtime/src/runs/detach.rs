//! Work that must finish whoever waits for it, without a task of its own when somebody does.
//!
//! `POST /chat` records its run's outcome even if the client goes away: hyper drops the
//! handler's future then. Spawning every run onto a task would cover that, at the price of a
//! task, a wake-up and a join per request; [`Detachable`] polls the run in the handler instead
//! and hands it to a task of its own only when it is dropped before it finished.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::FutureExt;

use crate::logging::panic_message;

/// Why a [`Detachable`] gave no value.
#[derive(Debug)]
pub(super) struct Panicked(pub(super) String);

/// A future polled by its caller until it completes, and spawned onto the current runtime if
/// the caller drops it before (see the module docs; its output is then dropped). A panic inside
/// it is an error, as a task's would be its join error.
pub(super) struct Detachable<F: Future + Send + 'static> {
    work: Option<Pin<Box<F>>>,
}

impl<F: Future + Send + 'static> Detachable<F> {
    pub(super) fn new(work: F) -> Self {
        Self {
            work: Some(Box::pin(work)),
        }
    }
}

impl<F: Future + Send + 'static> Future for Detachable<F> {
    type Output = Result<F::Output, Panicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(work) = self.work.as_mut() else {
            return Poll::Ready(Err(Panicked("polled after it finished".to_owned())));
        };
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(cx)));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => {
                self.work = None;
                Poll::Ready(Ok(output))
            }
            Err(panic) => {
                self.work = None;
                let message = panic_message(panic.as_ref()).unwrap_or_default();
                Poll::Ready(Err(Panicked(format!("panicked: {message}"))))
            }
        }
    }
}

impl<F: Future + Send + 'static> Drop for Detachable<F> {
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            // Outside a runtime (it is shutting down) there is nowhere to finish it. A panic on
            // the task ends the task only (and the panic hook logs it), as before it was moved.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(work.map(drop));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn it_finishes_in_place_when_awaited() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let out = Detachable::new(async move {
            flag.store(true, Ordering::Release);
            7
        })
        .await;
        assert!(matches!(out, Ok(7)), "{out:?}");
        assert!(done.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn it_finishes_on_a_task_when_dropped_first() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let work = Detachable::new(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::Release);
        });
        // The caller gives up after 5 ms, as a client that goes away does.
        let gave_up = tokio::time::timeout(Duration::from_millis(5), work).await;
        assert!(gave_up.is_err());
        assert!(!done.load(Ordering::Acquire));
        for _ in 0..100 {
            if done.load(Ordering::Acquire) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the dropped work did not finish");
    }

    #[tokio::test]
    async fn a_panic_is_its_output() {
        let out = Detachable::new(async {
            if true {
                panic!("agent exploded");
            }
        })
        .await;
        assert!(
            matches!(&out, Err(Panicked(m)) if m.contains("agent exploded")),
            "{out:?}"
        );
    }
}
