//! Recycled buffers for large messages and frames.
//!
//! Large frames are read into buffers of their own, and a message that
//! arrives in several frames is joined into one buffer. Fresh buffers of
//! tens of kilobytes and more come from the allocator as untouched (or just
//! trimmed) pages, so every byte copied into them first costs a page fault:
//! most of a large message's receive cost, measured. Such buffers go back to
//! a small process-wide pool when the application drops the message, and the
//! next large frame or message reuses one. The pool holds at most
//! [`MAX_POOLED`] bytes in all (idle memory, whatever the number of
//! connections), sorted by size class so a lookup looks at a few buffers.

use bytes::Bytes;
use std::sync::Mutex;

/// Buffers smaller than this are not pooled (the allocator reuses them well).
pub(crate) const MIN_POOLED: usize = 16 * 1024;
/// The most idle memory the pool keeps, over the whole process; also the
/// largest buffer it keeps.
pub(crate) const MAX_POOLED: usize = 16 << 20;
/// Size classes: [16 KiB, 32 KiB), [32 KiB, 64 KiB), ... up to MAX_POOLED.
const CLASSES: usize = (MAX_POOLED / MIN_POOLED).trailing_zeros() as usize + 1;
/// A lookup looks at no more than this many buffers of its class.
const LOOK_AT: usize = 8;

struct Pool {
    classes: [Vec<Vec<u8>>; CLASSES],
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    classes: [const { Vec::new() }; CLASSES],
    bytes: 0,
});

/// The size class of a capacity in [MIN_POOLED, MAX_POOLED].
fn class(capacity: usize) -> usize {
    (capacity / MIN_POOLED).ilog2() as usize
}

/// An empty buffer with room for at least `capacity` bytes: a pooled one
/// of the same size class when one is large enough.
pub(crate) fn take(capacity: usize) -> Vec<u8> {
    if (MIN_POOLED..=MAX_POOLED).contains(&capacity) {
        let mut pool = POOL.lock().unwrap();
        let class = &mut pool.classes[class(capacity)];
        let found = (class.iter().enumerate().rev().take(LOOK_AT))
            .find(|(_, b)| b.capacity() >= capacity)
            .map(|(i, _)| i);
        if let Some(i) = found {
            let buf = class.swap_remove(i);
            pool.bytes -= buf.capacity();
            return buf;
        }
    }
    Vec::with_capacity(capacity)
}

/// A finished frame or message whose buffer returns to the pool when the
/// last reference to it is dropped.
pub(crate) fn freeze(buf: Vec<u8>) -> Bytes {
    if !(MIN_POOLED..=MAX_POOLED).contains(&buf.capacity()) {
        return Bytes::from(buf);
    }
    Bytes::from_owner(Recycled(buf))
}

struct Recycled(Vec<u8>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        let size = buf.capacity();
        let mut evicted = Vec::new();
        let mut pool = POOL.lock().unwrap();
        // A larger buffer saves more page faults when reused: smaller ones
        // make room for it (frame buffers must not crowd out the buffer of a
        // 16 MiB message).
        for smaller in 0..class(size) {
            while pool.bytes + size > MAX_POOLED {
                let Some(b) = pool.classes[smaller].pop() else { break };
                pool.bytes -= b.capacity();
                evicted.push(b);
            }
        }
        if pool.bytes + size <= MAX_POOLED {
            buf.clear();
            pool.bytes += size;
            pool.classes[class(size)].push(buf);
        }
        drop(pool);
        drop(evicted); // freed outside the lock
    }
}

/// Idle bytes in the pool (for tests).
#[cfg(test)]
pub(crate) fn pooled() -> usize {
    POOL.lock().unwrap().bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // Megabytes of allocations are slow under miri, and this has no unsafe code.
    #[cfg_attr(miri, ignore)]
    fn large_buffers_come_back_and_the_pool_stays_bounded() {
        // A buffer comes back only for a request of its own size class.
        drop(many_of(MIN_POOLED * 3, 1));
        let e = take(MIN_POOLED);
        assert!(e.capacity() < MIN_POOLED * 2, "a smaller class never gets a larger buffer");
        let d = take(MIN_POOLED * 2 + 1);
        assert!(d.capacity() >= MIN_POOLED * 3, "same class, large enough: reused");
        let size = 128 * 1024;
        let a = freeze({
            let mut v = take(size);
            v.resize(size, 7);
            v
        });
        let ptr = a.as_ptr();
        let slice = a.slice(10..20);
        drop(a);
        // Still referenced by the slice: not back yet.
        let b = take(size);
        assert_ne!(b.as_ptr(), ptr);
        drop(slice);
        let c = take(size);
        assert_eq!(c.as_ptr(), ptr, "the released buffer is reused");
        assert!(c.is_empty());
        // Never more than MAX_POOLED idle.
        let many: Vec<Bytes> = (0..MAX_POOLED / size + 4).map(|_| freeze(Vec::with_capacity(size))).collect();
        drop(many);
        assert!(pooled() <= MAX_POOLED);
        // A buffer as large as the whole pool still gets in: smaller ones
        // make room for it.
        drop(many_of(MIN_POOLED, 4));
        drop(freeze(Vec::with_capacity(MAX_POOLED)));
        let whole = take(MAX_POOLED);
        assert_eq!(whole.capacity(), MAX_POOLED, "the largest buffer was kept");
        drop(whole);
        // Small buffers are not pooled.
        let before = pooled();
        drop(freeze(vec![1u8; 100]));
        drop(freeze(vec![1u8; MIN_POOLED - 1]));
        assert_eq!(pooled(), before);

        drop((b, c, d, e));
    }

    fn many_of(size: usize, n: usize) -> Vec<Bytes> {
        (0..n).map(|_| freeze(Vec::with_capacity(size))).collect()
    }
}
