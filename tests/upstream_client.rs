//! The lean upstream client (`portcullis::proxy::h1`) against hyper's HTTP/1.1 client: a
//! scripted upstream sends the same bytes to each, and the outcome must be the same — the
//! response head (its fields as the gateway forwards them), the body and trailers or the
//! failure, and whether the connection carried a second request. Where the lean client is deliberately stricter (any framing doubt closes
//! the connection), the case says so and the test requires exactly that difference.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use portcullis::proxy::h1::{self, Connection, Held, Home, Io, Outgoing};
use portcullis::proxy::strip_hop_by_hop;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What every request after the first gets.
const SECOND: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond";

/// An upstream that answers the first request it sees with `first`, then either closes that
/// connection (`close`) or answers each later request on any connection with [`SECOND`].
/// Returns its address and the count of connections it accepted.
async fn scripted(first: Vec<u8>, close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let first = first.clone();
            let served = Arc::clone(&served);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request head (the requests here have no body).
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 4096];
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    if served.fetch_add(1, Ordering::SeqCst) == 0 {
                        if tcp.write_all(&first).await.is_err() {
                            return;
                        }
                        if close {
                            let _ = tcp.shutdown().await;
                            return;
                        }
                    } else if tcp.write_all(SECOND).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

type Fields = Vec<(String, Vec<u8>)>;

/// What a client made of the exchange.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// Status and header fields, or a failure before the body.
    head: Result<(u16, Fields), ()>,
    /// Body bytes and trailer fields, or a failure while reading it.
    body: Option<Result<(Vec<u8>, Fields), ()>>,
    /// The second request's body, sent on the same connection when the client kept it, else
    /// on a new one.
    second: Result<Vec<u8>, ()>,
    /// Connections the upstream accepted for both requests.
    connections: usize,
}

/// The fields as the gateway forwards them: without the hop-by-hop ones, which the lean
/// client may leave out of its map in the first place (a `Connection: keep-alive`).
fn fields(map: &http::HeaderMap) -> Fields {
    let mut map = map.clone();
    strip_hop_by_hop(&mut map);
    map.iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

fn request(method: &Method) -> Request<Empty<Bytes>> {
    Request::builder()
        .method(method.clone())
        .uri("/")
        .header("host", "upstream")
        .body(Empty::new())
        .unwrap()
}

async fn collect<B>(body: B) -> Result<(Vec<u8>, Fields), ()>
where
    B: hyper::body::Body<Data = Bytes>,
{
    let collected = body.collect().await.map_err(|_| ())?;
    let trailers = collected.trailers().map(fields).unwrap_or_default();
    Ok((collected.to_bytes().to_vec(), trailers))
}

async fn with_hyper(response: &[u8], close: bool, method: &Method) -> Outcome {
    let (addr, accepted) = scripted(response.to_vec(), close).await;
    let open = || async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    };
    let mut sender = open().await;
    let (head, body) = match sender.send_request(request(method)).await {
        Ok(resp) => {
            let head = (resp.status().as_u16(), fields(resp.headers()));
            (Ok(head), Some(collect(resp.into_body()).await))
        }
        Err(_) => (Err(()), None),
    };
    if sender.ready().await.is_err() {
        sender = open().await;
    }
    let second = match sender.send_request(request(&Method::GET)).await {
        Ok(resp) => collect(resp.into_body()).await.map(|(body, _)| body),
        Err(_) => Err(()),
    };
    Outcome {
        head,
        body,
        second,
        connections: accepted.load(Ordering::SeqCst),
    }
}

async fn with_lean(response: &[u8], close: bool, method: &Method) -> Outcome {
    let (addr, accepted) = scripted(response.to_vec(), close).await;
    let open = || async { Connection::new(Io::Plain(TcpStream::connect(addr).await.unwrap())) };
    // A key of its own: the worker's idle pool (this thread's) outlives `held`.
    static KEYS: AtomicU64 = AtomicU64::new(1 << 40);
    let key = KEYS.fetch_add(1, Ordering::Relaxed);
    let held = Arc::new(Held::default());
    let home = || Home::new(Arc::clone(&held), key);
    let mut first = Outgoing::new(request(method), "/", &[], []);
    let (head, body) = match h1::send(open().await, &mut first, home(), later()).await {
        Ok(resp) => {
            let head = (resp.status().as_u16(), fields(resp.headers()));
            (Ok(head), Some(collect(resp.into_body()).await))
        }
        Err(_) => (Err(()), None),
    };
    let kept = held.take(key).and_then(|mut c| c.is_usable().then_some(c));
    let conn = match kept {
        Some(conn) => conn,
        None => open().await,
    };
    let mut again = Outgoing::new(request(&Method::GET), "/", &[], []);
    let second = match h1::send(conn, &mut again, home(), later()).await {
        Ok(resp) => collect(resp.into_body()).await.map(|(body, _)| body),
        Err(_) => Err(()),
    };
    Outcome {
        head,
        body,
        second,
        connections: accepted.load(Ordering::SeqCst),
    }
}

/// How the two clients' outcomes must relate.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Same,
    /// The same, except that the lean client closes a connection hyper's would reuse.
    LeanCloses,
}

struct Case {
    name: &'static str,
    method: Method,
    response: Vec<u8>,
    /// The upstream closes the connection after the response.
    close: bool,
    expect: Expect,
}

fn case(name: &'static str, response: impl Into<Vec<u8>>) -> Case {
    Case {
        name,
        method: Method::GET,
        response: response.into(),
        close: false,
        expect: Expect::Same,
    }
}

impl Case {
    fn closing(mut self) -> Case {
        self.close = true;
        self
    }
    fn method(mut self, m: Method) -> Case {
        self.method = m;
        self
    }
    fn lean_closes(mut self) -> Case {
        self.expect = Expect::LeanCloses;
        self
    }
}

fn cases() -> Vec<Case> {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut big_chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in big.chunks(70_000) {
        big_chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        big_chunked.extend_from_slice(piece);
        big_chunked.extend_from_slice(b"\r\n");
    }
    big_chunked.extend_from_slice(b"0\r\n\r\n");
    let mut big_length =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", big.len()).into_bytes();
    big_length.extend_from_slice(&big);
    let many_headers: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let huge_header = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(500_000)
    );
    vec![
        case("content-length, keep-alive", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello"),
        case("content-length, large", big_length),
        case("chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        case("chunked, large", big_chunked),
        case("chunked with extensions", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0;last\r\n\r\n"),
        case("chunked with trailers", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 42\r\n\r\n"),
        case("100 Continue first", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        case("103 Early Hints first", "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        case("HEAD with a length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").method(Method::HEAD),
        case("204", "HTTP/1.1 204 No Content\r\n\r\n"),
        case("304 with a length", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"),
        case("no reason phrase", "HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok"),
        case("close-delimited", "HTTP/1.1 200 OK\r\n\r\nuntil the end").closing(),
        case("Connection: close", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").closing(),
        case("Connection: close, left open", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"),
        case("HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        case("HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"),
        case("equal lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"),
        case("length and chunked", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n").lean_closes(),
        case("chunked not last", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\nuntil the end").closing(),
        case("bytes after the body", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"),
        // Failures before the body.
        case("conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk"),
        case("invalid length", "HTTP/1.1 200 OK\r\nContent-Length: two\r\n\r\nok"),
        case("signed length", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok"),
        case("obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok"),
        case("space before the colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok"),
        case("not HTTP", "SSH-2.0-OpenSSH_9.2\r\n\r\n"),
        case("HTTP/2 status line", "HTTP/2 200\r\n\r\n"),
        case("closed before a response", "").closing(),
        case("head cut off", "HTTP/1.1 200 OK\r\nContent-Le").closing(),
        case("too many header fields", format!("HTTP/1.1 200 OK\r\n{many_headers}Content-Length: 0\r\n\r\n")),
        case("oversized head", huge_header),
        // Failures in the body.
        case("body cut off", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello").closing(),
        case("chunked cut off", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel").closing(),
        case("bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        case("chunk without CRLF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"),
        case("oversized chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    ]
}

#[tokio::test]
async fn the_lean_client_reads_upstream_responses_as_hyper_does() {
    let mut failures = Vec::new();
    for case in cases() {
        let hyper = with_hyper(&case.response, case.close, &case.method).await;
        let lean = with_lean(&case.response, case.close, &case.method).await;
        let agrees = match case.expect {
            Expect::Same => lean == hyper,
            Expect::LeanCloses => {
                lean.head == hyper.head
                    && lean.body == hyper.body
                    && lean.connections == 2
                    && hyper.connections == 1
                    && lean.second.as_deref() == Ok(b"second".as_slice())
            }
        };
        if !agrees {
            failures.push(format!(
                "{}:\n  hyper {}\n  lean  {}",
                case.name,
                summary(&hyper),
                summary(&lean)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// An outcome without kilobytes of body.
fn summary(o: &Outcome) -> String {
    let body = o.body.as_ref().map(|b| {
        b.as_ref().map(|(bytes, trailers)| {
            (
                String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into_owned(),
                bytes.len(),
                trailers.clone(),
            )
        })
    });
    let head = o
        .head
        .as_ref()
        .map(|(status, fields)| (status, fields.len()));
    format!(
        "head {head:?} body {body:?} second {:?} connections {}",
        o.second.as_ref().map(|b| String::from_utf8_lossy(b)),
        o.connections
    )
}

/// A request body that never ends.
struct Endless;

impl hyper::body::Body for Endless {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

/// An upstream may answer before it has read the request body (a 413, say): the answer is
/// read, and the connection, whose request was never finished, is not reused.
#[tokio::test]
async fn an_early_answer_is_read_and_its_connection_not_reused() {
    let (addr, _) = scripted(
        b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n\r\nbig".to_vec(),
        false,
    )
    .await;
    let held = Arc::new(Held::default());
    let req = Request::post("/upload")
        .header("host", "upstream")
        .body(Endless)
        .unwrap();
    let mut out = Outgoing::new(req, "/upload", &[], []);
    let conn = Connection::new(Io::Plain(TcpStream::connect(addr).await.unwrap()));
    let resp = h1::send(conn, &mut out, Home::new(Arc::clone(&held), 7), later())
        .await
        .ok()
        .expect("the early answer");
    assert_eq!(resp.status(), 413);
    assert_eq!(&collect(resp.into_body()).await.unwrap().0, b"big");
    assert!(held.take(7).is_none(), "a connection mid-request was kept");
}

/// A request is sent again on a new connection only when that repeats nothing: an idempotent
/// method without a body. A body is streamed once, so a `PUT` with one is never re-sent.
#[tokio::test]
async fn only_bodiless_idempotent_requests_may_be_sent_again() {
    let cases = [
        (Method::GET, None, true),
        (Method::DELETE, None, true),
        (Method::POST, None, false),
        (Method::PUT, Some("body"), false),
    ];
    for (method, body, want) in cases {
        let req = Request::builder()
            .method(method.clone())
            .uri("/")
            .header("host", "upstream")
            .body(match body {
                Some(b) => http_body_util::Either::Left(http_body_util::Full::new(Bytes::from(b))),
                None => http_body_util::Either::Right(Empty::<Bytes>::new()),
            })
            .unwrap();
        let mut out = Outgoing::new(req, "/", &[], []);
        assert_eq!(out.may_retry(), want, "{method} before sending");
        // Sent on a connection the upstream closes unanswered: still the same answer after.
        let (addr, _) = scripted(Vec::new(), true).await;
        let conn = Connection::new(Io::Plain(TcpStream::connect(addr).await.unwrap()));
        let held = Arc::new(Held::default());
        let failed = h1::send(conn, &mut out, Home::new(held, 9), later()).await;
        let Err(failed) = failed else {
            panic!("{method}: answered by an upstream that only closes")
        };
        assert!(failed.closed_unanswered(), "{method}: closed unanswered");
        assert_eq!(out.may_retry(), want, "{method} after a failed attempt");
    }
}

/// An upstream that takes the request and never answers: the exchange ends at its deadline,
/// and that is not the sign of a connection closed meanwhile, so the request is never sent
/// again (which would double the client's wait).
#[tokio::test]
async fn an_unanswered_exchange_ends_at_its_deadline_and_is_not_sent_again() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
    });
    let conn = Connection::new(Io::Plain(TcpStream::connect(addr).await.unwrap()));
    let mut out = Outgoing::new(request(&Method::GET), "/", &[], []);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(200);
    let held = Arc::new(Held::default());
    let Err(failed) = h1::send(conn, &mut out, Home::new(held, 11), deadline).await else {
        panic!("a silent upstream answered");
    };
    assert!(
        matches!(failed.error, h1::Error::TimedOut),
        "{}",
        failed.error
    );
    assert!(
        tokio::time::Instant::now() >= deadline,
        "ended before its deadline"
    );
    assert!(failed.nothing_received);
    assert!(
        !failed.closed_unanswered(),
        "a timeout taken for a closed connection"
    );
    // The connection was dropped with the failed exchange: the upstream sees it close.
    silent.await.unwrap();
}

/// A deadline far enough away not to matter.
fn later() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(30)
}
