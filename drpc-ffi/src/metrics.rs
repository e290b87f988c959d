//! Metrics: snapshots of a server's or a connection's counters and per-rpc
//! latency histograms, as plain C structs.

use crate::client::ConnObj;
use crate::server::ServerObj;
use crate::*;
use drpc_core::metrics::MetricsSnapshot;

/// The largest gRPC code with its own slot in `drpc_metrics.failed_by_code`.
const CODES: usize = 17;

/// The counters of a server (summed over all its connections, closed ones
/// included) or of one client connection. Plain data, filled by
/// `drpc_server_metrics`, `drpc_conn_metrics` or
/// `drpc_metrics_snapshot_counters`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct drpc_metrics {
    /// Bytes written to and read from the connections (frames included).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Streams (unary calls included) started, and ended for any reason.
    pub streams_opened: u64,
    pub streams_closed: u64,
    /// Streams that ended with an error (any code), and how many by code:
    /// `failed_by_code[c]` for the gRPC codes 0..=16 (4: deadline exceeded,
    /// 1: cancelled), `failed_other_codes` for codes outside that range.
    pub streams_failed: u64,
    pub failed_by_code: [u64; 17],
    pub failed_other_codes: u64,
    /// Streams open right now.
    pub active_streams: u64,
    /// Receives that had to wait for the peer (back-pressure).
    pub recv_blocked: u64,
    /// Sends that waited because the connection's writer was full.
    pub send_blocked: u64,
    /// Bytes queued in the writers right now.
    pub queued_bytes: u64,
    /// Connections accepted (server) or made (client), and open now.
    pub connections_opened: u64,
    pub active_connections: u64,
    /// Entries of the snapshot's per-rpc statistics (servers only; see
    /// `drpc_metrics_snapshot_rpc`).
    pub rpc_count: usize,
}

impl drpc_metrics {
    fn of(m: &MetricsSnapshot) -> drpc_metrics {
        let mut out = drpc_metrics {
            bytes_sent: m.bytes_sent,
            bytes_received: m.bytes_received,
            streams_opened: m.streams_opened,
            streams_closed: m.streams_closed,
            streams_failed: m.streams_failed,
            active_streams: m.active_streams,
            recv_blocked: m.recv_blocked,
            send_blocked: m.send_blocked,
            queued_bytes: m.queued_bytes,
            connections_opened: m.connections_opened,
            active_connections: m.active_connections,
            rpc_count: m.rpcs.len(),
            ..Default::default()
        };
        for &(code, count) in &m.failed_by_code {
            match out.failed_by_code.get_mut(code as usize) {
                Some(slot) if (code as usize) < CODES => *slot += count,
                _ => out.failed_other_codes += count,
            }
        }
        out
    }
}

/// The statistics of one rpc in a snapshot. Every pointer is borrowed from
/// the snapshot and valid until `drpc_metrics_snapshot_free`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct drpc_rpc_stats {
    /// The rpc name, NUL-terminated.
    pub rpc: *const c_char,
    /// Calls that ended, and of those the ones that failed (any code).
    pub count: u64,
    pub failed: u64,
    /// The latency histogram: `bucket_count` buckets, bucket `i` counting
    /// calls that took at most `bucket_bounds_us[i]` microseconds (and more
    /// than the bound before it); the last bucket (no bound) counts the
    /// rest. `bucket_bounds_us` has `bucket_count - 1` entries.
    pub bucket_count: usize,
    pub bucket_bounds_us: *const u64,
    pub bucket_counts: *const u64,
    /// The sum of all latencies, in microseconds (mean = sum / count).
    pub latency_sum_us: u64,
}

/// A consistent copy of a server's or connection's metrics, taken at one
/// moment: the counters and the per-rpc statistics. Owned by the caller
/// (`drpc_metrics_snapshot_free`); immutable, readable from any thread.
pub struct drpc_metrics_snapshot {
    _opaque: [u8; 0],
}

pub(crate) struct SnapshotObj {
    metrics: MetricsSnapshot,
    names: Vec<CString>,
}

impl HandleType for SnapshotObj {
    type C = drpc_metrics_snapshot;
    const NAME: &'static str = "drpc_metrics_snapshot";
}

fn write_counters(m: &MetricsSnapshot, out: *mut drpc_metrics) -> Res<drpc_status> {
    arg_out(out, "metrics_out")?;
    // SAFETY: checked non-NULL; a writable `drpc_metrics *` per the contract.
    unsafe { *out = drpc_metrics::of(m) };
    Ok(drpc_status::DRPC_OK)
}

fn new_snapshot(m: MetricsSnapshot, out: *mut *mut drpc_metrics_snapshot) -> Res<drpc_status> {
    let names = m.rpcs.iter().map(|r| cstring_lossy(&r.rpc)).collect();
    // SAFETY: the caller checked `out`.
    unsafe { *out = new_handle(Arc::new(SnapshotObj { metrics: m, names })) };
    Ok(drpc_status::DRPC_OK)
}

fn clear_out<T>(out: *mut *mut T) -> Res<()> {
    arg_out(out, "snapshot_out")?;
    // SAFETY: checked non-NULL; a writable pointer per the contract.
    unsafe { *out = std::ptr::null_mut() };
    Ok(())
}

/// Fills `*metrics_out` with the server's counters now (all zero before it
/// listens; after `drpc_server_shutdown` the final values). Cheap: a few
/// atomic loads per connection. Never blocks; thread-safe.
#[no_mangle]
pub extern "C" fn drpc_server_metrics(server: *const drpc_server, metrics_out: *mut drpc_metrics) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let s = get::<ServerObj>(server, "server")?;
        write_counters(&s.metrics(), metrics_out)
    })
}

/// A snapshot of the server's metrics, per-rpc statistics included, in
/// `*snapshot_out` (owned by the caller: `drpc_metrics_snapshot_free`).
/// Never blocks; thread-safe.
#[no_mangle]
pub extern "C" fn drpc_server_metrics_snapshot(
    server: *const drpc_server,
    snapshot_out: *mut *mut drpc_metrics_snapshot,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        clear_out(snapshot_out)?;
        let s = get::<ServerObj>(server, "server")?;
        new_snapshot(s.metrics(), snapshot_out)
    })
}

/// Fills `*metrics_out` with the connection's client-side counters now.
/// Never blocks; thread-safe.
#[no_mangle]
pub extern "C" fn drpc_conn_metrics(conn: *const drpc_conn, metrics_out: *mut drpc_metrics) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let c = get::<ConnObj>(conn, "conn")?;
        write_counters(&c.conn.metrics(), metrics_out)
    })
}

/// A snapshot of the connection's metrics in `*snapshot_out` (owned by the
/// caller: `drpc_metrics_snapshot_free`). Never blocks; thread-safe.
#[no_mangle]
pub extern "C" fn drpc_conn_metrics_snapshot(
    conn: *const drpc_conn,
    snapshot_out: *mut *mut drpc_metrics_snapshot,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        clear_out(snapshot_out)?;
        let c = get::<ConnObj>(conn, "conn")?;
        new_snapshot(c.conn.metrics(), snapshot_out)
    })
}

/// Fills `*metrics_out` with the snapshot's counters (`rpc_count` tells how
/// many per-rpc entries it has). Never blocks; any thread.
#[no_mangle]
pub extern "C" fn drpc_metrics_snapshot_counters(
    snapshot: *const drpc_metrics_snapshot,
    metrics_out: *mut drpc_metrics,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let s = get::<SnapshotObj>(snapshot, "snapshot")?;
        write_counters(&s.metrics, metrics_out)
    })
}

/// Fills `*stats_out` with the statistics of rpc `index` (0 <= `index` <
/// `rpc_count`; rpcs sorted by name), its pointers borrowed from the
/// snapshot. `DRPC_BAD_ARGUMENT` for an index out of range, a NULL pointer or
/// a handle that is not a live snapshot. Never blocks; any thread.
#[no_mangle]
pub extern "C" fn drpc_metrics_snapshot_rpc(
    snapshot: *const drpc_metrics_snapshot,
    index: usize,
    stats_out: *mut drpc_rpc_stats,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        arg_out(stats_out, "stats_out")?;
        let s = get::<SnapshotObj>(snapshot, "snapshot")?;
        let (Some(r), Some(name)) = (s.metrics.rpcs.get(index), s.names.get(index)) else {
            return Err(Fail::bad(format!(
                "rpc index {index} out of range ({} rpcs)",
                s.metrics.rpcs.len()
            )));
        };
        // The snapshot is immutable and the table holds it until it is
        // freed, so pointers into it stay valid that long.
        let stats = drpc_rpc_stats {
            rpc: name.as_ptr(),
            count: r.count,
            failed: r.failed,
            bucket_count: r.latency.counts.len(),
            bucket_bounds_us: r.latency.bounds_us.as_ptr(),
            bucket_counts: r.latency.counts.as_ptr(),
            latency_sum_us: r.latency.sum_us,
        };
        // SAFETY: checked non-NULL; a writable `drpc_rpc_stats *`.
        unsafe { *stats_out = stats };
        Ok(drpc_status::DRPC_OK)
    })
}

/// Releases a snapshot (the pointers borrowed from it become invalid).
/// NULL is a no-op.
#[no_mangle]
pub extern "C" fn drpc_metrics_snapshot_free(snapshot: *mut drpc_metrics_snapshot) {
    guard((), || {
        drop(take::<SnapshotObj>(snapshot));
    })
}
