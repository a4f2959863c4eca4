//! Small byte strings the request path makes for every request, a generated request id, an
//! upstream response's head copied and the upstream request's head written, in one buffer per
//! thread and split off it as [`Bytes`].
//!
//! A `Bytes` copied from a slice is a vector of its own: one allocation to make it, another
//! at its first clone or slice (it is promoted to a shared buffer then; a head's header values
//! are slices of it, a request id is cloned into the response), and two frees. Split off a
//! buffer that is already shared, it costs neither, only a reference count. Once every copy
//! in the buffer is gone, the buffer is reused from its start; while some still live (their
//! requests still open) and it is full, a new one is started, and the old one is freed with
//! its last copy. So a copy pins at most one buffer, and a thread holds one of its own. A
//! copy longer than a buffer makes the buffer as long, and it is reused the same way. An
//! upstream request's head lives until its response head arrives, so a request the upstream
//! holds (a long poll) keeps its buffer ([`CHUNK`] bytes, or the head's length when longer)
//! as long.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

/// A buffer's size: a few dozen response heads or a hundred request ids.
pub const CHUNK: usize = 4096;

thread_local! {
    static BUFFER: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `bytes`, copied into this thread's buffer.
pub fn copy(bytes: &[u8]) -> Bytes {
    write(bytes.len(), |buffer| buffer.extend_from_slice(bytes))
}

/// What `f` appends to an empty buffer, written in this thread's buffer; `room` is what it
/// will likely take (more is taken as `f` needs it: `BytesMut` grows). `f` must not use this
/// module itself (the buffer is borrowed while it runs).
pub fn write(room: usize, f: impl FnOnce(&mut BytesMut)) -> Bytes {
    BUFFER.with_borrow_mut(|buffer| {
        // Empty after every split; cleared all the same, so that nothing a writer left
        // behind (had it panicked) could become the start of the next one's bytes.
        buffer.clear();
        if buffer.capacity() < room {
            // Takes the buffer back from its start when no copy in it is left, else starts
            // a new one (`BytesMut::reserve` does both).
            buffer.reserve(room.max(CHUNK));
        }
        f(buffer);
        buffer.split().freeze()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a thread of its own, so that it starts with a new buffer.
    fn on_new_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().unwrap();
    }

    #[test]
    fn copies_hold_their_bytes_across_buffers() {
        on_new_thread(|| {
            // Lengths that end buffers at many offsets, and some longer than a buffer.
            let lengths = [1, 31, 32, 200, 4095, CHUNK, CHUNK + 1, 3 * CHUNK, 7];
            let mut kept = Vec::new();
            for round in 0..40u8 {
                for (i, &len) in lengths.iter().enumerate() {
                    let source: Vec<u8> = (0..len).map(|j| round ^ (i as u8) ^ (j as u8)).collect();
                    let copy = copy(&source);
                    assert_eq!(copy, source, "round {round}, length {len}");
                    if (round as usize + i).is_multiple_of(3) {
                        kept.push((copy, source));
                    }
                }
            }
            for (copy, source) in &kept {
                assert_eq!(copy, source, "a kept copy is not overwritten by later ones");
            }
        });
    }

    #[test]
    fn a_buffer_is_reused_once_its_copies_are_gone() {
        on_new_thread(|| {
            let first = copy(&[1; 100]);
            let second = copy(&[2; 100]);
            let start = first.as_ptr();
            assert_eq!(
                second.as_ptr(),
                start.wrapping_add(100),
                "copies are split off one buffer, one after another"
            );
            drop((first, second));
            // Fill the rest of the buffer, dropping every copy: the copy that no longer
            // fits takes the same buffer back from its start, with no new allocation.
            for _ in 0..(CHUNK / 100) - 2 {
                drop(copy(&[2; 100]));
            }
            let again = copy(&[3; 100]);
            assert_eq!(again.as_ptr(), start, "the buffer was reused");
            assert_eq!(again, [3; 100].as_slice());
        });
    }

    #[test]
    fn writes_share_the_buffer_with_copies_and_may_outgrow_their_room() {
        on_new_thread(|| {
            let id = copy(b"id");
            let head = write(8, |b| {
                b.extend_from_slice(b"GET / HTTP/1.1\r\n");
                b.extend_from_slice(b"\r\n");
            });
            assert_eq!(head, b"GET / HTTP/1.1\r\n\r\n".as_slice());
            assert_eq!(
                head.as_ptr(),
                id.as_ptr().wrapping_add(2),
                "a write is split off the same buffer, after the copy"
            );
            // Longer than the buffer's room: it grows, and what was written stays.
            let long = write(1, |b| {
                for i in 0..3 * CHUNK {
                    b.extend_from_slice(&[i as u8]);
                }
            });
            assert!(long.iter().enumerate().all(|(i, &b)| b == i as u8));
            assert_eq!(long.len(), 3 * CHUNK);
            assert_eq!(id, b"id".as_slice());
            assert_eq!(copy(b"next"), b"next".as_slice());
        });
    }

    #[test]
    fn a_buffer_with_a_live_copy_is_left_to_it() {
        on_new_thread(|| {
            let held = copy(&[1; 100]);
            for _ in 0..(CHUNK / 100) - 1 {
                drop(copy(&[2; 100]));
            }
            let next = copy(&[3; 100]);
            assert_ne!(next.as_ptr(), held.as_ptr(), "a new buffer was started");
            assert_eq!(held, [1; 100].as_slice(), "the held copy is intact");
            assert_eq!(next, [3; 100].as_slice());
        });
    }
}
