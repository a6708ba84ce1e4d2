//! Request and response bodies bounded by the call's byte budget ([`crate::Limits::http_bytes`]),
//! and response bodies bounded in time: a server that stops sending is cut off after the
//! between-bytes timeout, and never after the call's deadline.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use wasmtime_wasi_http::{Error, WasiBody};

/// The body bytes one call may still send and receive over HTTP, shared by all its requests.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    remaining: AtomicUsize,
    limit: usize,
}

impl ByteBudget {
    pub(crate) fn new(limit: usize) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            remaining: AtomicUsize::new(limit),
            limit,
        })
    }

    /// Takes `bytes` from the budget. When fewer remain, the budget is spent (set to zero, so
    /// the call's later bodies fail too) and the answer is false.
    fn take(&self, bytes: usize) -> bool {
        let taken = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(bytes)
            })
            .is_ok();
        if !taken {
            self.remaining.store(0, Ordering::SeqCst);
        }
        taken
    }

    fn limit(&self) -> u64 {
        u64::try_from(self.limit).unwrap_or(u64::MAX)
    }
}

/// The bytes of a data frame (trailers and other frames cost nothing).
fn data_len(frame: &Frame<Bytes>) -> usize {
    frame.data_ref().map_or(0, Bytes::len)
}

/// The guest's request body, charged to the budget as hyper sends it: past the budget the
/// request fails with `HttpRequestBodySize`.
pub(crate) struct RequestBody {
    inner: WasiBody,
    budget: Arc<ByteBudget>,
}

impl RequestBody {
    pub(crate) fn new(inner: WasiBody, budget: Arc<ByteBudget>) -> RequestBody {
        RequestBody { inner, budget }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        Poll::Ready(match frame {
            Some(Ok(frame)) if !self.budget.take(data_len(&frame)) => {
                Some(Err(Error::HttpRequestBodySize(Some(self.budget.limit()))))
            }
            other => other,
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body from the server, charged to the budget as the guest reads it (past the
/// budget: `HttpResponseBodySize`), and cut off (`ConnectionReadTimeout`) when no frame comes
/// within the between-bytes timeout or by the call's deadline.
pub(crate) struct ResponseBody<B> {
    inner: B,
    budget: Arc<ByteBudget>,
    between_bytes: Duration,
    deadline: Instant,
    silence: Pin<Box<Sleep>>,
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(
        inner: B,
        budget: Arc<ByteBudget>,
        between_bytes: Duration,
        deadline: Instant,
    ) -> ResponseBody<B> {
        let silence = Box::pin(tokio::time::sleep_until(next_frame_by(
            between_bytes,
            deadline,
        )));
        ResponseBody {
            inner,
            budget,
            between_bytes,
            deadline,
            silence,
        }
    }
}

/// When the next frame must have come: after the between-bytes timeout, at the deadline at the
/// latest.
fn next_frame_by(between_bytes: Duration, deadline: Instant) -> Instant {
    Instant::now()
        .checked_add(between_bytes)
        .map_or(deadline, |by| by.min(deadline))
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Error>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if !this.budget.take(data_len(&frame)) {
                    let limit = this.budget.limit();
                    return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(limit)))));
                }
                let by = next_frame_by(this.between_bytes, this.deadline);
                this.silence.as_mut().reset(by);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(this.silence.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    /// A body of data frames of the given sizes.
    struct Chunks(std::collections::VecDeque<usize>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
            let next = self.0.pop_front();
            Poll::Ready(next.map(|size| Ok(Frame::data(Bytes::from(vec![b'x'; size])))))
        }
    }

    fn chunks(sizes: &[usize]) -> Chunks {
        Chunks(sizes.iter().copied().collect())
    }

    fn far_deadline() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test]
    async fn a_response_within_the_budget_arrives_whole() {
        let budget = ByteBudget::new(10);
        let body = ResponseBody::new(
            chunks(&[4, 6]),
            budget.clone(),
            Duration::from_secs(5),
            far_deadline(),
        );
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 10);
        assert!(!budget.take(1), "the budget is used up");
    }

    #[tokio::test]
    async fn a_response_past_the_budget_fails_and_spends_it() {
        let budget = ByteBudget::new(10);
        let body = ResponseBody::new(
            chunks(&[4, 7]),
            budget.clone(),
            Duration::from_secs(5),
            far_deadline(),
        );
        let error = body.collect().await.unwrap_err();
        assert!(
            matches!(error, Error::HttpResponseBodySize(Some(10))),
            "{error}"
        );
        assert!(!budget.take(1), "a later body gets nothing");
    }

    #[tokio::test]
    async fn request_bodies_draw_on_the_same_budget() {
        let budget = ByteBudget::new(8);
        let sent = RequestBody::new(chunks(&[5]).boxed_unsync(), budget.clone());
        assert_eq!(sent.collect().await.unwrap().to_bytes().len(), 5);
        let too_much = RequestBody::new(
            Full::new(Bytes::from_static(b"1234"))
                .map_err(|never| match never {})
                .boxed_unsync(),
            budget,
        );
        let error = too_much.collect().await.unwrap_err();
        assert!(
            matches!(error, Error::HttpRequestBodySize(Some(8))),
            "{error}"
        );
    }

    /// A server that sends headers, then nothing.
    struct Silent;

    impl Body for Silent {
        type Data = Bytes;
        type Error = Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_silent_server_is_cut_off_at_the_between_bytes_timeout() {
        let body = ResponseBody::new(
            Silent,
            ByteBudget::new(10),
            Duration::from_millis(20),
            far_deadline(),
        );
        let error = body.collect().await.unwrap_err();
        assert!(matches!(error, Error::ConnectionReadTimeout), "{error}");
    }

    #[tokio::test]
    async fn a_silent_server_is_cut_off_at_the_deadline() {
        let body = ResponseBody::new(
            Silent,
            ByteBudget::new(10),
            Duration::from_secs(60),
            Instant::now() + Duration::from_millis(20),
        );
        let error = body.collect().await.unwrap_err();
        assert!(matches!(error, Error::ConnectionReadTimeout), "{error}");
    }
}
