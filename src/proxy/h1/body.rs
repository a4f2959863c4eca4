//! A response body read from its upstream connection as the client asks for it, framed as
//! its head said; the connection goes home only after a clean end.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::codec::{ChunkedDecoder, Decoded, Framing};
use super::{Connection, Error, Home};

/// Where the body ends.
enum Decoder {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// A response body read from its upstream connection as the client connection asks for it.
/// Dropped before its end, it closes the connection: a connection is never reused in an
/// unknown state.
pub struct ResponseBody {
    /// `None` once the body has ended.
    conn: Option<Connection>,
    decoder: Decoder,
    reusable: bool,
    home: Option<Home>,
}

impl ResponseBody {
    /// The body framed by `framing` on `conn`, which goes to `home` after a clean end if
    /// `reusable`. A body that is empty from the start ends (and sends the connection home)
    /// at once.
    pub(super) fn new(conn: Connection, framing: Framing, reusable: bool, home: Home) -> Self {
        let decoder = match framing {
            Framing::Empty => Decoder::Length(0),
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(ChunkedDecoder::default()),
            Framing::UntilClose => Decoder::UntilClose,
        };
        let mut body = ResponseBody {
            conn: Some(conn),
            decoder,
            reusable,
            home: Some(home),
        };
        if body.is_end_stream() {
            body.finish();
        }
        body
    }

    /// The body has ended: the connection goes home if nothing casts doubt on it (a response
    /// that allowed reuse, the whole request sent, no byte read beyond this response).
    fn finish(&mut self) {
        if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take())
            && self.reusable
            && conn.read.is_empty()
        {
            home.put(conn);
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.decoder {
                Decoder::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Decoder::Length(remaining) if !conn.read.is_empty() => {
                    let take = usize::try_from(*remaining)
                        .map_or(conn.read.len(), |r| r.min(conn.read.len()));
                    let data = conn.read.split_to(take).freeze();
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        // Now, not at the next poll: the server side may not ask again once
                        // the size hint says the body is complete.
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoder::Chunked(decoder) => match decoder.decode(&mut conn.read) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(t)) => {
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                    Ok(Decoded::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => return this.fail(Error::Framing(e)),
                },
                Decoder::UntilClose if !conn.read.is_empty() => {
                    let data = conn.read.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoder::Length(_) | Decoder::UntilClose => {}
            }
            match ready!(conn.poll_read_more(cx)) {
                Ok(0) if matches!(this.decoder, Decoder::UntilClose) => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Error::IncompleteBody),
                Ok(_) => {}
                Err(e) => return this.fail(Error::Io(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.decoder, Decoder::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.conn, &self.decoder) {
            (None, _) => SizeHint::with_exact(0),
            (_, Decoder::Length(n)) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }
}
