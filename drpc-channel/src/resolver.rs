//! Name resolution: turning a target into the endpoint addresses a channel
//! balances over. Targets are written like gRPC's:
//!
//! | target                          | resolver                                   |
//! |---------------------------------|--------------------------------------------|
//! | `dns:///host:port`, `host:port` | DNS A/AAAA, re-resolved periodically and on failure |
//! | `unix:/path`, `unix:///path`    | one Unix socket                            |
//! | `ipv4:1.2.3.4:5,6.7.8.9:10`     | a static list of IPv4 addresses            |
//! | `ipv6:[::1]:5,[::2]:6`          | a static list of IPv6 addresses            |
//!
//! Service registries plug in by implementing [`Resolver`]; [`ManualResolver`]
//! is a list the application updates (pushing changes to the channel at once).

use drpc_core::Status;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Produces the endpoint addresses of a target: `ip:port` / `host:port` for
/// TCP, `unix:/path` for Unix sockets. The channel calls `resolve` when it
/// starts, every `resolve_interval`, after a connection failure (at most once
/// per `min_resolve_interval`), and whenever `changed` resolves.
pub trait Resolver: Send + Sync + 'static {
    fn resolve(&self) -> BoxFuture<'_, Result<Vec<String>, Status>>;

    /// Resolves when the resolver knows its answer changed (push-style
    /// registries). The channel calls it before each `resolve`, and a change
    /// after that call must resolve it. The default never resolves:
    /// polling only.
    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::pending())
    }
}

/// A fixed list of endpoints.
#[derive(Clone, Debug)]
pub struct StaticResolver {
    endpoints: Vec<String>,
}

impl StaticResolver {
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> StaticResolver {
        StaticResolver { endpoints: endpoints.into_iter().map(Into::into).collect() }
    }
}

impl Resolver for StaticResolver {
    fn resolve(&self) -> BoxFuture<'_, Result<Vec<String>, Status>> {
        let endpoints = self.endpoints.clone();
        Box::pin(async move { Ok(endpoints) })
    }
}

/// A list of endpoints the application (or a registry watcher it runs)
/// replaces with [`ManualResolver::set`]; channels using it pick the new
/// list up at once, without polling. Cheap to clone; clones share the list.
#[derive(Clone, Default)]
pub struct ManualResolver {
    inner: Arc<ManualInner>,
}

#[derive(Default)]
struct ManualInner {
    endpoints: Mutex<Vec<String>>,
    changed: tokio::sync::Notify,
}

impl ManualResolver {
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> ManualResolver {
        let resolver = ManualResolver::default();
        resolver.set(endpoints);
        resolver
    }

    /// Replaces the endpoint list; channels apply it within moments (their
    /// resolver task runs). Endpoints no longer listed are drained:
    /// calls in flight on them finish, new calls go elsewhere.
    pub fn set(&self, endpoints: impl IntoIterator<Item = impl Into<String>>) {
        *self.inner.endpoints.lock().unwrap() = endpoints.into_iter().map(Into::into).collect();
        self.inner.changed.notify_waiters();
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.lock().unwrap().clone()
    }
}

impl Resolver for ManualResolver {
    fn resolve(&self) -> BoxFuture<'_, Result<Vec<String>, Status>> {
        let endpoints = self.endpoints();
        Box::pin(async move { Ok(endpoints) })
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.inner.changed.notified())
    }
}

/// Looks up the IP addresses of a host name. [`SystemLookup`] (the
/// default) asks the operating system's resolver (`getaddrinfo`: /etc/hosts,
/// then DNS per /etc/resolv.conf); tests and special setups supply their own.
pub trait HostLookup: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> BoxFuture<'_, std::io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver, through tokio's blocking pool.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemLookup;

impl HostLookup for SystemLookup {
    fn lookup(&self, host: &str) -> BoxFuture<'_, std::io::Result<Vec<IpAddr>>> {
        let host = host.to_string();
        Box::pin(async move {
            // The port is irrelevant; lookup_host wants one.
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// DNS: every A/AAAA address of `host`, each with `port`. IP literals
/// resolve to themselves without a lookup.
pub struct DnsResolver {
    host: String,
    port: u16,
    lookup: Arc<dyn HostLookup>,
}

impl DnsResolver {
    /// Resolves through the system resolver.
    pub fn new(host: impl Into<String>, port: u16) -> DnsResolver {
        DnsResolver::with_lookup(host, port, Arc::new(SystemLookup))
    }

    pub fn with_lookup(host: impl Into<String>, port: u16, lookup: Arc<dyn HostLookup>) -> DnsResolver {
        DnsResolver { host: host.into(), port, lookup }
    }
}

impl Resolver for DnsResolver {
    fn resolve(&self) -> BoxFuture<'_, Result<Vec<String>, Status>> {
        Box::pin(async move {
            let ips = match self.host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => self
                    .lookup
                    .lookup(&self.host)
                    .await
                    .map_err(|e| Status::unavailable(format!("resolving {}: {e}", self.host)))?,
            };
            let mut endpoints: Vec<String> = Vec::with_capacity(ips.len());
            for ip in ips {
                let endpoint = SocketAddr::new(ip, self.port).to_string();
                if !endpoints.contains(&endpoint) {
                    endpoints.push(endpoint);
                }
            }
            if endpoints.is_empty() {
                return Err(Status::unavailable(format!("resolving {}: no addresses", self.host)));
            }
            Ok(endpoints)
        })
    }
}

/// Parses a gRPC-style target into its resolver; DNS names use `lookup`.
pub fn parse_target(target: &str, lookup: Arc<dyn HostLookup>) -> Result<Arc<dyn Resolver>, Status> {
    let bad = |why: &str| Status::invalid_argument(format!("target {target:?}: {why}"));
    if let Some(path) = target.strip_prefix("unix:") {
        // unix:///abs/path and unix:/abs/path name the same socket; unix:rel/path is relative.
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(bad("empty socket path"));
        }
        return Ok(Arc::new(StaticResolver::new([format!("unix:{path}")])));
    }
    for (scheme, want_v6) in [("ipv4:", false), ("ipv6:", true)] {
        if let Some(list) = target.strip_prefix(scheme) {
            let mut endpoints = Vec::new();
            for item in list.split(',') {
                let addr: SocketAddr = item.trim().parse().map_err(|_| bad(&format!("{item:?} is not an address with a port")))?;
                if addr.is_ipv6() != want_v6 {
                    return Err(bad(&format!("{item:?} does not belong in an {scheme} list")));
                }
                endpoints.push(addr.to_string());
            }
            return Ok(Arc::new(StaticResolver::new(endpoints)));
        }
    }
    let name = match target.strip_prefix("dns:") {
        Some(rest) => match rest.strip_prefix("//") {
            // dns://authority/host:port names the DNS server to ask; only the
            // system's own (an empty authority) is supported.
            Some(rest) => match rest.split_once('/') {
                Some(("", name)) => name,
                Some((authority, _)) => {
                    return Err(bad(&format!(
                        "DNS authority {authority:?} is not supported; use dns:///host:port (system resolver) or a custom HostLookup"
                    )))
                }
                None => return Err(bad("expected dns:///host:port")),
            },
            None => rest,
        },
        None if target.contains("://") => return Err(bad("unknown scheme")),
        None => target,
    };
    let (host, port) = split_host_port(name).ok_or_else(|| bad("expected host:port"))?;
    Ok(Arc::new(DnsResolver::with_lookup(host, port, lookup)))
}

/// `host:port`, `[v6]:port` or `v6addr` is refused without brackets.
fn split_host_port(s: &str) -> Option<(String, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        return Some((host.to_string(), port.parse().ok()?));
    }
    let (host, port) = s.rsplit_once(':')?;
    if host.is_empty() || host.contains(':') {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn resolve(target: &str) -> Result<Vec<String>, Status> {
        parse_target(target, Arc::new(SystemLookup))?.resolve().await
    }

    #[tokio::test]
    async fn targets_parse_like_grpc() {
        assert_eq!(resolve("unix:/tmp/a.sock").await.unwrap(), ["unix:/tmp/a.sock"]);
        assert_eq!(resolve("unix:///tmp/a.sock").await.unwrap(), ["unix:/tmp/a.sock"]);
        assert_eq!(resolve("ipv4:1.2.3.4:5, 6.7.8.9:10").await.unwrap(), ["1.2.3.4:5", "6.7.8.9:10"]);
        assert_eq!(resolve("ipv6:[::1]:5,[::2]:6").await.unwrap(), ["[::1]:5", "[::2]:6"]);
        assert_eq!(resolve("dns:///127.0.0.1:7").await.unwrap(), ["127.0.0.1:7"]);
        assert_eq!(resolve("dns:127.0.0.1:7").await.unwrap(), ["127.0.0.1:7"]);
        assert_eq!(resolve("127.0.0.1:7").await.unwrap(), ["127.0.0.1:7"]);
        assert_eq!(resolve("[::1]:7").await.unwrap(), ["[::1]:7"]);
        for bad in ["ipv4:[::1]:5", "ipv6:1.2.3.4:5", "ipv4:1.2.3.4", "dns://8.8.8.8/x:1", "http://x:1", "host", "::1", "unix:", "h:port"] {
            let err = match parse_target(bad, Arc::new(SystemLookup)) {
                Ok(_) => panic!("{bad} parsed"),
                Err(e) => e,
            };
            assert_eq!(err.code(), drpc_core::Code::InvalidArgument, "{bad}");
        }
    }
}
