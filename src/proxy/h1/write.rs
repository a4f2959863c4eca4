//! Writing a request to an upstream: the head, then the body framed by `Content-Length` or
//! chunked, queued and written with `writev` as frames arrive.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::Body;
use tokio::io::AsyncWrite;

use super::{BoxError, Error, Io};

/// Most buffers handed to one `writev`.
const MAX_IOVECS: usize = 16;

/// The request's bytes on their way out.
pub(super) struct Writer {
    /// The head's bytes not yet written. Apart from the queue: most requests are a head
    /// alone, and a queue allocates at its first entry.
    head: Bytes,
    /// The body's encoded bytes not yet written, after the head.
    queue: VecDeque<Bytes>,
    chunked: bool,
    /// Bytes still owed under `Content-Length`.
    remaining: u64,
    /// The body's end has been queued.
    done: bool,
}

impl Writer {
    /// The encoded `head` first; then, if `has_body`, a body framed by `length` (`Some(n)`
    /// bytes, `None` chunked).
    pub(super) fn new(head: Bytes, length: Option<u64>, has_body: bool) -> Writer {
        Writer {
            head,
            queue: VecDeque::new(),
            chunked: length.is_none(),
            remaining: length.unwrap_or(0),
            done: !has_body,
        }
    }

    /// The whole request, body and its end included, has been written.
    pub(super) fn finished(&self) -> bool {
        self.done && self.pending() == 0
    }

    /// How many buffers wait to be written.
    fn pending(&self) -> usize {
        usize::from(!self.head.is_empty()) + self.queue.len()
    }

    /// Writes what is queued, then queues the body's next frame, until either waits.
    /// `Ready(Ok(true))`: something was written.
    pub(super) fn poll<B>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut Io,
        body: &mut Option<B>,
    ) -> Poll<Result<bool, Error>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let mut progressed = false;
        loop {
            // The next body frame first, so that the head and the first bytes of a body at
            // hand leave in one write.
            if !self.done && self.pending() < MAX_IOVECS - 2 {
                let Some(b) = body.as_mut() else {
                    self.done = true;
                    continue;
                };
                match Pin::new(b).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data()
                            && !data.is_empty()
                        {
                            self.queue_data(data)?;
                        }
                        continue;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(Error::RequestBody(e.into())));
                    }
                    Poll::Ready(None) => {
                        if self.chunked {
                            self.queue.push_back(Bytes::from_static(b"0\r\n\r\n"));
                        } else if self.remaining != 0 {
                            return Poll::Ready(Err(Error::RequestBodyLength));
                        }
                        *body = None;
                        self.done = true;
                        continue;
                    }
                    Poll::Pending if self.pending() == 0 => {
                        return if progressed {
                            Poll::Ready(Ok(true))
                        } else {
                            Poll::Pending
                        };
                    }
                    Poll::Pending => {}
                }
            }
            let count = self.pending().min(MAX_IOVECS);
            if count == 0 {
                return Poll::Ready(Ok(progressed));
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let head = (!self.head.is_empty()).then_some(&self.head);
            for (slice, bytes) in slices.iter_mut().zip(head.into_iter().chain(&self.queue)) {
                *slice = IoSlice::new(bytes);
            }
            let written = match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())));
                }
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                Poll::Pending if progressed => return Poll::Ready(Ok(true)),
                Poll::Pending => return Poll::Pending,
            };
            progressed = true;
            self.advance(written);
        }
    }

    fn queue_data(&mut self, data: Bytes) -> Result<(), Error> {
        if self.chunked {
            let mut size = BytesMut::with_capacity(18);
            use std::fmt::Write as _;
            let _ = write!(size, "{:x}\r\n", data.len());
            self.queue.push_back(size.freeze());
            self.queue.push_back(data);
            self.queue.push_back(Bytes::from_static(b"\r\n"));
        } else {
            let len = data.len() as u64;
            if len > self.remaining {
                return Err(Error::RequestBodyLength);
            }
            self.remaining -= len;
            self.queue.push_back(data);
        }
        Ok(())
    }

    fn advance(&mut self, mut written: usize) {
        let of_head = written.min(self.head.len());
        self.head.advance(of_head);
        written -= of_head;
        while written > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if written >= front.len() {
                written -= front.len();
                self.queue.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_take_the_head_then_the_queue() {
        // Bytes written by each call (partial writes included), and what is left after.
        let cases: &[(&[usize], &str, usize)] = &[
            (&[], "HEADbody1body2", 3),
            (&[2], "ADbody1body2", 3),
            (&[4], "body1body2", 2),
            (&[6], "dy1body2", 2),
            (&[2, 2, 5], "body2", 1),
            (&[3, 8], "dy2", 1),
            (&[14], "", 0),
        ];
        for (steps, left, pending) in cases {
            let mut writer = Writer::new(Bytes::from_static(b"HEAD"), Some(10), true);
            writer.queue.push_back(Bytes::from_static(b"body1"));
            writer.queue.push_back(Bytes::from_static(b"body2"));
            for &n in *steps {
                writer.advance(n);
            }
            let rest: Vec<u8> = writer
                .head
                .iter()
                .chain(writer.queue.iter().flatten())
                .copied()
                .collect();
            assert_eq!(rest, left.as_bytes(), "{steps:?}");
            assert_eq!(writer.pending(), *pending, "{steps:?}");
        }
        let head_alone = Writer::new(Bytes::from_static(b"HEAD"), Some(0), false);
        assert!(!head_alone.finished(), "its head is still to be written");
        assert_eq!(
            head_alone.queue.capacity(),
            0,
            "a head alone allocates no queue"
        );
    }
}
