//! Every connection has a deadline, on every path: each test is a socket that misbehaves in
//! exactly one way and must be cut off. Waits are on the gateway's own signals (a closed
//! connection, a response); the limits only bound how long a failing build is waited for.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Harness, Options, raw_status};
use http::Request;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A `/o/` request whose body stalls after a few bytes is answered 408 and its connection
/// closed, within the header-read timeout, with no credentials needed to try it.
#[tokio::test]
async fn a_stalled_token_request_body_is_cut_off() {
    let h = Harness::with(Options {
        extra: "limits: { header_read_timeout_seconds: 1 }".into(),
        ..Options::default()
    })
    .await;
    for path in ["/o/token/", "/o/revoke_token/", "/o/introspect/"] {
        let mut s = TcpStream::connect(h.local_addr()).await.unwrap();
        s.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\ngrant_type="
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
        assert!(
            read.is_ok(),
            "{path}: the stalled request still holds its connection"
        );
        let raw = String::from_utf8_lossy(&out);
        assert_eq!(raw_status(&raw), 408, "{path}: {raw}");
    }
    h.shutdown().await;
}

/// A proxied request whose form body stalls (the gateway reads a form body whole, to refuse
/// a credential in it) is answered 408 once the request timeout has passed: the phase's
/// timer is made only when the phase waits, and then it fires.
#[tokio::test]
async fn a_stalled_proxied_form_body_is_answered_408() {
    let h = Harness::with(Options {
        extra: "limits: { request_timeout_seconds: 1 }".into(),
        ..Options::default()
    })
    .await;
    let mut s = TcpStream::connect(h.local_addr()).await.unwrap();
    s.write_all(
        b"POST /public/form HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\na=1",
    )
    .await
    .unwrap();
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut out))
        .await
        .expect("the stalled request was never answered")
        .unwrap();
    let raw = String::from_utf8_lossy(&out[..n]);
    assert_eq!(raw_status(&raw), 408, "{raw}");
    h.shutdown().await;
}

/// Before the protocol is known — nothing sent, or the HTTP/2 preface trickled a byte at a
/// time — the connection has the header-read timeout, not the idle timeout, and trickled
/// bytes do not extend it.
#[tokio::test]
async fn a_connection_must_send_a_request_head_in_time() {
    let h = Harness::with(Options {
        extra: "limits: { header_read_timeout_seconds: 1, idle_timeout_seconds: 120 }".into(),
        ..Options::default()
    })
    .await;
    let mut silent = TcpStream::connect(h.local_addr()).await.unwrap();
    assert!(
        common::closed_within(&mut silent, Duration::from_secs(20)).await,
        "a silent connection outlived the header-read timeout"
    );

    let mut trickle = TcpStream::connect(h.local_addr()).await.unwrap();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    let mut closed = false;
    'trickling: for _ in 0..6 {
        for &byte in preface {
            if trickle.write_all(&[byte]).await.is_err() {
                closed = true;
                break 'trickling;
            }
            // The gateway closing the socket is the signal; a short read window paces the trickle.
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(150), trickle.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break 'trickling;
                }
                _ => {}
            }
        }
    }
    assert!(closed, "a trickled preface kept the connection open");
    h.shutdown().await;
}

/// An HTTP/2 connection whose only traffic after a request is PINGs (here the client's own
/// keep-alive) is idle: streams count, frames do not.
#[tokio::test]
async fn an_http2_connection_that_only_pings_is_idle() {
    let h = Harness::with(Options {
        extra: "limits: { idle_timeout_seconds: 1 }".into(),
        ..Options::default()
    })
    .await;
    let tcp = TcpStream::connect(h.local_addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_millis(100))
            .keep_alive_while_idle(true)
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let ended = tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::get(format!("http://{}/public/a", h.local_addr()))
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    // The connection task ends when the gateway closes the connection.
    let closed = tokio::time::timeout(Duration::from_secs(20), ended).await;
    assert!(
        closed.is_ok(),
        "a ping-only HTTP/2 connection was never idle"
    );
    h.shutdown().await;
}

/// A client that asks for a large response and never reads it loses its connection after the
/// write timeout. With one connection allowed, the next client is served only once that
/// happens: the signal the test waits on.
#[tokio::test]
async fn a_client_that_never_reads_is_cut_off() {
    const CHUNK: usize = 1 << 20;
    let big = common::scripted_upstream(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
            64 * CHUNK
        )
        .into_bytes(),
        vec![b'x'; CHUNK],
        64,
    )
    .await;
    let h = Harness::with(Options {
        upstream_url: Some(format!("http://{big}")),
        extra: "limits: { max_connections: 1, write_timeout_seconds: 1, idle_timeout_seconds: 300, request_timeout_seconds: 300 }".into(),
        ..Options::default()
    })
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut sleeper = socket.connect(h.local_addr()).await.unwrap();
    sleeper
        .write_all(b"GET /public/big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    // Wait for the response to start, then stop reading.
    let mut first = [0u8; 12];
    sleeper.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    let mut next = TcpStream::connect(h.local_addr()).await.unwrap();
    next.write_all(b"GET /public/small HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    let served = tokio::time::timeout(Duration::from_secs(30), next.read_exact(&mut head)).await;
    assert!(
        served.is_ok(),
        "the non-reading client still holds the only connection"
    );
    assert_eq!(&head, b"HTTP/1.1 200");
    drop(sleeper);
    h.shutdown().await;
}

/// Each later request head on a keep-alive connection has the header-read timeout too, from
/// the end of the response before it: one trickled a byte at a time (slowloris) is cut off,
/// however long the idle timeout.
#[tokio::test]
async fn a_later_request_head_must_come_in_time() {
    let h = Harness::with(Options {
        extra: "limits: { header_read_timeout_seconds: 1, idle_timeout_seconds: 120 }".into(),
        ..Options::default()
    })
    .await;
    let mut conn = TcpStream::connect(h.local_addr()).await.unwrap();
    assert_eq!(exchange(&mut conn, "/public/a").await, 200);
    let mut closed = false;
    let head = b"GET /public/b HTTP/1.1\r\nHost: a\r\nX-Slow: ";
    'trickling: for &byte in head.iter().chain(std::iter::repeat_n(&b'a', 200)) {
        if conn.write_all(&[byte]).await.is_err() {
            closed = true;
            break;
        }
        // The gateway closing the socket is the signal; a short read window paces the trickle.
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(100), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break 'trickling;
            }
            _ => {}
        }
    }
    assert!(
        closed,
        "a trickled second request head kept the connection open"
    );
    h.shutdown().await;
}

/// The header-read timeout runs per request head, not per connection: requests that each
/// come within it keep a connection for longer than it.
#[tokio::test]
async fn heads_that_each_come_in_time_keep_the_connection() {
    let h = Harness::with(Options {
        extra: "limits: { header_read_timeout_seconds: 1, idle_timeout_seconds: 120 }".into(),
        ..Options::default()
    })
    .await;
    let mut conn = TcpStream::connect(h.local_addr()).await.unwrap();
    for i in 0..4 {
        if i > 0 {
            // The pause between requests is what is tested: 4 x 600 ms outlasts the timeout.
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        assert_eq!(exchange(&mut conn, "/public/a").await, 200, "request {i}");
    }
    h.shutdown().await;
}

/// Sends a keep-alive GET for `path` on `conn` and reads its response whole (by its
/// `Content-Length`); returns the status.
async fn exchange(conn: &mut TcpStream, path: &str) -> u16 {
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), conn.read(&mut buf))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "the connection closed before a whole response");
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if got.len() >= end + 4 + length {
            return raw_status(&String::from_utf8_lossy(&got));
        }
    }
}
