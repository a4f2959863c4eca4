//! Chunked response bodies (RFC 9112 §7.1), decoded from the front of the read buffer
//! strictly: a chunk-size line of hex digits and CRLF, data followed by CRLF, a trailer section
//! bounded in size.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use super::{FramingError, MAX_HEADERS};

/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// What the chunked decoder produced.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body is complete; whatever follows in the buffer is not this response's.
    End,
    /// More bytes are needed.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// Decodes a chunked body (RFC 9112 §7.1) from the front of a buffer, consuming it.
#[derive(Debug)]
pub struct ChunkedDecoder(Chunk);

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder(Chunk::Size)
    }
}

impl ChunkedDecoder {
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, FramingError> {
        loop {
            match self.0 {
                Chunk::Size => match chunk_size(buf)? {
                    None => return Ok(Decoded::NeedMore),
                    Some((len, 0)) => {
                        buf.advance(len);
                        self.0 = Chunk::Trailers;
                    }
                    Some((len, size)) => {
                        buf.advance(len);
                        self.0 = Chunk::Data(size);
                    }
                },
                Chunk::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
                    let left = remaining - take as u64;
                    self.0 = if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Chunk::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(FramingError::BadChunkEnd);
                    }
                    buf.advance(2);
                    self.0 = Chunk::Size;
                }
                Chunk::Trailers => {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((len, _))) if len > MAX_TRAILER_BYTES => {
                            return Err(FramingError::BadTrailers);
                        }
                        Ok(httparse::Status::Complete((len, fields))) => {
                            let mut trailers = HeaderMap::new();
                            for f in fields {
                                let name = HeaderName::from_bytes(f.name.as_bytes())
                                    .map_err(|_| FramingError::BadTrailers)?;
                                let value = HeaderValue::from_bytes(f.value)
                                    .map_err(|_| FramingError::BadTrailers)?;
                                trailers.append(name, value);
                            }
                            buf.advance(len);
                            self.0 = Chunk::Done;
                            if !trailers.is_empty() {
                                return Ok(Decoded::Trailers(trailers));
                            }
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILER_BYTES => {
                            return Err(FramingError::BadTrailers);
                        }
                        Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                        Err(_) => return Err(FramingError::BadTrailers),
                    }
                }
                Chunk::Done => return Ok(Decoded::End),
            }
        }
    }

    pub fn is_done(&self) -> bool {
        self.0 == Chunk::Done
    }
}

/// A chunk-size line: 1 to 16 hex digits, optional whitespace, optional extensions (ignored;
/// no CR, LF or other control character), CRLF. `Ok(None)`: incomplete.
fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, FramingError> {
    let digits = buf.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits > 16 || (digits == 0 && !buf.is_empty()) {
        return Err(FramingError::BadChunkSize);
    }
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_CHUNK_LINE {
            return Err(FramingError::BadChunkSize);
        }
        return Ok(None);
    };
    if !(1..=MAX_CHUNK_LINE).contains(&end) || buf[end - 1] != b'\r' || digits == 0 {
        return Err(FramingError::BadChunkSize);
    }
    let rest = &buf[digits..end - 1];
    let ws = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let rest = &rest[ws..];
    let extensions_ok = rest.is_empty()
        || (rest[0] == b';' && rest.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)));
    if !extensions_ok {
        return Err(FramingError::BadChunkSize);
    }
    let size = buf[..digits].iter().fold(0u64, |n, &d| {
        n << 4 | u64::from((d as char).to_digit(16).unwrap_or_default())
    });
    Ok(Some((end + 1, size)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(raw: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>, usize), FramingError> {
        // Fed one byte at a time: every split point is exercised.
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let (mut body, mut trailers) = (Vec::new(), None);
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::End => return Ok((body, trailers, buf.len() + raw.len() - fed)),
                Decoded::NeedMore if fed == raw.len() => return Err(FramingError::BadChunkEnd),
                Decoded::NeedMore => {
                    buf.extend_from_slice(&raw[fed..=fed]);
                    fed += 1;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_strictly() {
        type Case = (
            &'static [u8],
            &'static [u8],
            Option<(&'static str, &'static str)>,
        );
        let ok: &[Case] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello", None),
            (
                b"5;ext=1\r\nhello\r\n6 ; a\r\n world\r\n0\r\n\r\n",
                b"hello world",
                None,
            ),
            (
                b"A\r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\n",
                b"0123456789",
                Some(("x-sum", "1")),
            ),
            (b"0\r\n\r\n", b"", None),
        ];
        for (raw, body, trailer) in ok {
            let (got, trailers, left) = decode_all(raw).unwrap();
            assert_eq!(&got[..], *body, "{raw:?}");
            assert_eq!(left, 0);
            match trailer {
                Some((k, v)) => assert_eq!(trailers.unwrap()[*k], *v),
                None => assert!(trailers.is_none()),
            }
        }
        let bad: &[(&[u8], FramingError)] = &[
            (b"\r\nhello\r\n0\r\n\r\n", FramingError::BadChunkSize),
            (b"5\nhello\r\n0\r\n\r\n", FramingError::BadChunkSize),
            (b"x\r\n", FramingError::BadChunkSize),
            (b"11111111111111111\r\n", FramingError::BadChunkSize),
            (b"5;a\nb\r\nhello\r\n", FramingError::BadChunkSize),
            (b"5\r\nhelloXX0\r\n\r\n", FramingError::BadChunkEnd),
            (b"0\r\nbad trailer\r\n\r\n", FramingError::BadTrailers),
        ];
        for (raw, want) in bad {
            assert_eq!(decode_all(raw).unwrap_err(), *want, "{raw:?}");
        }
    }
}
