//! A phase of a request under the request timeout.

use std::pin::Pin;
use std::task::Poll;

use tokio::time::Instant;

use crate::http::GatewayError;

pin_project_lite::pin_project! {
    /// `phase`, or a request timeout once `deadline` passes. The timer is made only if the
    /// phase has to wait: most finish at their first poll (a cache hit), and a
    /// `tokio::time::Timeout` makes its timer (the runtime's handle looked up and cloned) for
    /// every request, and is moved with the request's future. A future of its own rather
    /// than an `async fn`, which would hold `phase` twice (rust-lang/rust#62958).
    pub(super) struct Within<F> {
        #[pin]
        phase: F,
        deadline: Instant,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

pub(super) fn within<F: Future>(deadline: Instant, phase: F) -> Within<F> {
    Within {
        phase,
        deadline,
        timer: None,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(done) = this.phase.poll(cx) {
            return Poll::Ready(Ok(done));
        }
        let deadline = *this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer
            .as_mut()
            .poll(cx)
            .map(|()| Err(GatewayError::RequestTimeout))
    }
}
