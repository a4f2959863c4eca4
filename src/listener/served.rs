//! A connection served by hyper in the protocol its first bytes told ([`super::first_bytes`]):
//! hyper's own HTTP/1.1 or HTTP/2 connection, driven and shut down alike. hyper-util's `auto`
//! connection, even told the protocol, wraps the socket once more (`Rewind`, a check on every
//! read) and adds a state of its own to every poll (benches/README.md, "The lean floor": 112
//! and 132 instructions per request, counted without LTO).
//!
//! An HTTP/2 connection is boxed: hyper's is 1,560 bytes against HTTP/1.1's 720, and an enum is
//! as large as its largest variant, so every HTTP/1.1 connection's task carried (and copied, as
//! the connection was made and its task spawned) 840 bytes it never used; an HTTP/2 connection
//! lives long and serves many streams, and one allocation more is nothing to it
//! (`bash benches/future_sizes.sh src/listener/`).
//!
//! Both impls repeat hyper's own bounds on its connections: an inherent impl and a trait impl
//! cannot share one where clause.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body, Incoming};
use hyper::rt::bounds::Http2ServerConnExec;
use hyper::rt::{Read, Write};
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;

type BoxError = Box<dyn StdError + Send + Sync>;

pin_project_lite::pin_project! {
    #[project = ServedProj]
    pub(super) enum Served<I, S, E>
    where
        S: HttpService<Incoming>,
    {
        Http1 { #[pin] conn: http1::Connection<I, S> },
        Http2 { conn: Pin<Box<http2::Connection<I, S, E>>> },
    }
}

impl<I, S, E, B> Served<I, S, E>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: Read + Write + Unpin,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    E: Http2ServerConnExec<S::Future, B>,
{
    /// Finishes the requests in flight and closes: HTTP/1.1 after the current response,
    /// HTTP/2 with a GOAWAY.
    pub(super) fn graceful_shutdown(self: Pin<&mut Self>) {
        match self.project() {
            ServedProj::Http1 { conn } => conn.graceful_shutdown(),
            ServedProj::Http2 { conn } => conn.as_mut().graceful_shutdown(),
        }
    }
}

impl<I, S, E, B> Future for Served<I, S, E>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: Read + Write + Unpin,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    E: Http2ServerConnExec<S::Future, B>,
{
    type Output = Result<(), hyper::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ServedProj::Http1 { conn } => conn.poll(cx),
            ServedProj::Http2 { conn } => conn.as_mut().poll(cx),
        }
    }
}
