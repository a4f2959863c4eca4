//! The lean upstream client's parser never panics on what an upstream sends, and its result
//! does not depend on how the bytes arrive: the whole response at once and the same bytes cut
//! at a point the input chooses give the same head, body, trailers or failure. A body never
//! holds more bytes than its framing allows, nor more than arrived.
#![no_main]

use bytes::BytesMut;
use http::Method;
use libfuzzer_sys::fuzz_target;
use portcullis::proxy::h1::codec::{ChunkedDecoder, Decoded, Framing, MAX_HEADERS, parse_head};

/// What a client would make of `pieces` arriving one after another.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// More bytes were needed when the input ran out.
    Incomplete,
    Failed,
    Response {
        status: u16,
        fields: usize,
        body: Vec<u8>,
        trailers: usize,
        complete: bool,
    },
}

fn read(pieces: &[&[u8]], method: &Method) -> Outcome {
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    let mut buf = BytesMut::new();
    let mut rest = pieces.iter();
    let head = loop {
        match parse_head(&mut buf, method) {
            Ok(Some(head)) => break head,
            Ok(None) => match rest.next() {
                Some(p) => buf.extend_from_slice(p),
                None => return Outcome::Incomplete,
            },
            Err(_) => return Outcome::Failed,
        }
    };
    assert!(head.headers.len() <= MAX_HEADERS);
    let mut body = Vec::new();
    let mut trailers = 0;
    let complete = match head.framing {
        Framing::Empty => true,
        Framing::Length(n) => {
            for p in rest {
                buf.extend_from_slice(p);
            }
            let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            body.extend_from_slice(&buf[..take]);
            take as u64 == n
        }
        Framing::UntilClose => {
            for p in rest {
                buf.extend_from_slice(p);
            }
            body.extend_from_slice(&buf);
            true
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Decoded::Data(d)) => {
                        assert!(!d.is_empty());
                        body.extend_from_slice(&d);
                    }
                    Ok(Decoded::Trailers(t)) => trailers = t.len(),
                    Ok(Decoded::End) => break true,
                    Ok(Decoded::NeedMore) => match rest.next() {
                        Some(p) => buf.extend_from_slice(p),
                        None => break false,
                    },
                    Err(_) => return Outcome::Failed,
                }
            }
        }
    };
    assert!(body.len() <= total);
    Outcome::Response {
        status: head.status.as_u16(),
        fields: head.headers.len(),
        body,
        trailers,
        complete,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, data)) = data.split_first() else {
        return;
    };
    let method = if control & 1 == 0 { Method::GET } else { Method::HEAD };
    let cut = (control as usize >> 1).min(data.len());
    let whole = read(&[data], &method);
    let split = read(&[&data[..cut], &data[cut..]], &method);
    assert_eq!(whole, split, "cut at {cut}");
});
