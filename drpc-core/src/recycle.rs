//! Recycled buffers for large assembled messages.
//!
//! A message that arrives in several frames is joined into one buffer. Fresh
//! megabyte-sized buffers come from the allocator as untouched pages, so
//! every byte copied into them first costs a page fault (most of a large
//! message's receive cost, measured). Buffers of large messages go back to a
//! small process-wide pool when the application drops the message, and the
//! next large message reuses one. The pool holds at most [`MAX_POOLED`]
//! bytes in all (idle memory, whatever the number of connections).

use bytes::Bytes;
use std::sync::Mutex;

/// Buffers smaller than this are not pooled (the allocator reuses them well).
pub(crate) const MIN_POOLED: usize = 128 * 1024;
/// The most idle memory the pool keeps, over the whole process.
pub(crate) const MAX_POOLED: usize = 16 << 20;

struct Pool {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { buffers: Vec::new(), bytes: 0 });

/// An empty buffer with room for at least `capacity` bytes: a pooled one
/// when one is large enough.
pub(crate) fn take(capacity: usize) -> Vec<u8> {
    if capacity >= MIN_POOLED {
        let mut pool = POOL.lock().unwrap();
        // The smallest pooled buffer that fits.
        let best = (pool.buffers.iter().enumerate())
            .filter(|(_, b)| b.capacity() >= capacity)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        if let Some(i) = best {
            let buf = pool.buffers.swap_remove(i);
            pool.bytes -= buf.capacity();
            return buf;
        }
    }
    Vec::with_capacity(capacity)
}

/// A finished message whose buffer returns to the pool when the last
/// reference to it is dropped.
pub(crate) fn freeze(buf: Vec<u8>) -> Bytes {
    if buf.capacity() < MIN_POOLED {
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
        let mut pool = POOL.lock().unwrap();
        if pool.bytes + size <= MAX_POOLED {
            buf.clear();
            pool.bytes += size;
            pool.buffers.push(buf);
        }
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
        let size = MIN_POOLED;
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
        // Small buffers are not pooled.
        let before = pooled();
        drop(freeze(vec![1u8; 100]));
        assert_eq!(pooled(), before);
        drop((b, c));
    }
}
