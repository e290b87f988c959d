//! Handles: what C holds instead of pointers to Rust objects.
//!
//! A handle is an opaque pointer-sized value that is never dereferenced. It
//! encodes a unique, never reused id (with the top bit set, so it can be
//! neither NULL nor the address of anything this library allocates). A
//! global table maps ids to the object and its type. Every entry point looks
//! its handle up and holds a strong reference (`Arc`) to the object for as
//! long as it runs, so freeing a handle while other threads are inside calls
//! on it only removes the table entry: they finish on their reference, and
//! later calls with the stale handle find nothing and return
//! `DRPC_BAD_ARGUMENT`. A handle of the wrong kind is found with the wrong
//! type and is refused the same way. Nothing can be read through a stale or
//! forged handle, so misuse is reported instead of crashing.

use crate::{Fail, Res};
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The top bit of every handle value. User-space addresses never have it on
/// the platforms we build for, which is how `drpc_buffer` / `drpc_error`
/// accessors (real pointers) recognise a handle passed to them by mistake.
pub(crate) const HANDLE_BIT: usize = 1 << (usize::BITS - 1);

/// Whether `p` has the shape of a handle (not of a real pointer).
pub(crate) fn looks_like_handle<T>(p: *const T) -> bool {
    (p as usize) & HANDLE_BIT != 0
}

/// A Rust object that C refers to by handle; `C` is the opaque type of the
/// header (`drpc_conn`, ...).
pub(crate) trait HandleType: Any + Send + Sync {
    type C;
    /// The C type's name, for error messages.
    const NAME: &'static str;
}

struct Slot {
    name: &'static str,
    obj: Arc<dyn Any + Send + Sync>,
}

/// Sharded so that threads working on different handles rarely meet.
const SHARDS: usize = 32;

/// B-trees rather than hash maps: a hash table's allocation is referenced
/// from its middle, which leak checkers report as "possibly lost" at exit.
type Shard = Mutex<BTreeMap<u64, Slot>>;

static TABLE: [Shard; SHARDS] = [const { Mutex::new(BTreeMap::new()) }; SHARDS];

/// Ids start at 1 and are never reused (2^63 of them cannot run out).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn shard(id: u64) -> std::sync::MutexGuard<'static, BTreeMap<u64, Slot>> {
    TABLE[(id as usize) % SHARDS]
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn id_of<T>(p: *const T) -> Option<u64> {
    let v = p as usize;
    (v & HANDLE_BIT != 0).then_some((v & !HANDLE_BIT) as u64)
}

/// Registers `obj` and returns its new handle.
pub(crate) fn new_handle<T: HandleType>(obj: Arc<T>) -> *mut T::C {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    shard(id).insert(id, Slot { name: T::NAME, obj });
    // The handle is a number, not an address: it carries no provenance.
    std::ptr::without_provenance_mut(HANDLE_BIT | id as usize)
}

fn not_live(what: &str, name: &str) -> Fail {
    Fail::bad(format!(
        "{what} is not a live {name} handle (already freed, or not made by this library)"
    ))
}

/// A strong reference to the object behind handle `p` (`what` names the
/// argument in error messages).
pub(crate) fn get<T: HandleType>(p: *const T::C, what: &str) -> Res<Arc<T>> {
    if p.is_null() {
        return Err(Fail::bad(format!("{what} is NULL")));
    }
    let id = id_of(p).ok_or_else(|| not_live(what, T::NAME))?;
    let (name, obj) = {
        let table = shard(id);
        let slot = table.get(&id).ok_or_else(|| not_live(what, T::NAME))?;
        (slot.name, slot.obj.clone())
    };
    obj.downcast::<T>()
        .map_err(|_| Fail::bad(format!("{what} is a {name} handle, not a {}", T::NAME)))
}

/// Like `get`, for functions that report no error (getters).
pub(crate) fn try_get<T: HandleType>(p: *const T::C) -> Option<Arc<T>> {
    get(p, "handle").ok()
}

/// Unregisters handle `p` if it is a live handle of type `T` and returns the
/// table's reference; other threads may still hold theirs. A NULL, stale or
/// wrong-kind handle is left alone (`None`).
pub(crate) fn take<T: HandleType>(p: *const T::C) -> Option<Arc<T>> {
    let id = id_of(p)?;
    let obj = {
        let mut table = shard(id);
        let slot = table.get(&id)?;
        if !slot.obj.is::<T>() {
            return None;
        }
        table.remove(&id)?.obj
    };
    obj.downcast::<T>().ok()
}

/// Unregisters a handle the library owns (a handler's call or stream) once
/// the handler has returned.
pub(crate) fn forget<C>(p: *const C) {
    if let Some(id) = id_of(p) {
        let slot = shard(id).remove(&id);
        // Dropped outside the shard lock: it may run arbitrary destructors.
        drop(slot);
    }
}

/// Live handles of every kind (a leak check for tests).
pub(crate) fn live_handles() -> usize {
    TABLE
        .iter()
        .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
        .sum()
}
