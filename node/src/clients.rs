//! Who a request comes from, and how often it may fail.
//!
//! - [`TrustedProxies`]: the reverse proxies whose `Forwarded` /
//!   `X-Forwarded-For` / `X-Forwarded-Proto` headers are believed. Anyone
//!   else's are ignored: a client cannot pick the address it is counted
//!   under, nor claim it came over TLS.
//! - [`Limiter`]: failures per client per minute (failed tracking look-ups,
//!   failed sign-ins; each has its own). IPv6 clients count per /64, the
//!   smallest block one subscriber usually gets, so rotating addresses inside
//!   it buys nothing. Its memory is bounded: past [`Limiter::CAPACITY`]
//!   clients, new ones share a single bucket rather than evicting anyone's
//!   count.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An address or a block of addresses (`203.0.113.7`, `10.0.0.0/8`,
/// `2001:db8::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let base: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or ADDRESS/PREFIX"))?;
        let bits = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0 to {bits}"))?,
        };
        Ok(Self { base, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(net)), self.prefix, 32)
                    == masked(u128::from(u32::from(ip)), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128)
                    == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn masked(value: u128, prefix: u8, bits: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        value >> (bits - prefix)
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Network>);

/// Where a request came from, as far as it can be believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The client: the connection's peer, or the address a trusted proxy
    /// forwarded for.
    pub client: IpAddr,
    /// The request reached us (or the trusted proxy) over TLS.
    pub tls: bool,
}

impl TrustedProxies {
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| Network::parse(e))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The origin of a request from `peer` carrying `headers`. Forwarding
    /// headers count only when `peer` is a trusted proxy; then the client is
    /// the nearest address in the chain that is not itself a trusted proxy
    /// (what lies further left was written by the client and proves
    /// nothing).
    pub fn origin(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> Origin {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return Origin {
                client: peer,
                tls: false,
            };
        }
        let (chain, proto) = forwarded(headers);
        let client = chain
            .iter()
            .rev()
            .copied()
            .map(canonical)
            .find(|ip| !self.trusts(*ip))
            .or_else(|| chain.first().copied().map(canonical))
            .unwrap_or(peer);
        Origin {
            client,
            tls: proto.is_some_and(|p| p.eq_ignore_ascii_case("https")),
        }
    }
}

/// The forwarded-for chain (client first) and the protocol the nearest
/// proxy was reached by: from `Forwarded` (RFC 7239) if present, else from
/// `X-Forwarded-For` and `X-Forwarded-Proto`. Unparsable entries are left
/// out.
fn forwarded(headers: &axum::http::HeaderMap) -> (Vec<IpAddr>, Option<String>) {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_owned())
            .collect()
    };
    let standard = values("forwarded");
    if !standard.is_empty() {
        let mut chain = Vec::new();
        let mut proto = None;
        for element in &standard {
            let mut element_proto = None;
            for pair in element.split(';') {
                let Some((key, value)) = pair.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "for" => chain.extend(node_address(value)),
                    "proto" => element_proto = Some(value.to_owned()),
                    _ => {}
                }
            }
            proto = element_proto;
        }
        return (chain, proto);
    }
    let chain = values("x-forwarded-for")
        .iter()
        .filter_map(|v| node_address(v))
        .collect();
    (chain, values("x-forwarded-proto").pop())
}

/// The address in a `for=` value or an `X-Forwarded-For` entry:
/// `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711`,
/// `2001:db8::1`.
fn node_address(value: &str) -> Option<IpAddr> {
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    value
        .parse()
        .ok()
        .or_else(|| value.rsplit_once(':')?.0.parse().ok())
}

/// What failures are counted under: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Client(IpAddr),
    /// Every client that came once the limiter was full.
    Overflow,
}

fn key_of(ip: IpAddr) -> Key {
    Key::Client(match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    })
}

const WINDOW: Duration = Duration::from_secs(60);

/// Failures per client within the current minute.
pub struct Limiter {
    failures: Mutex<HashMap<Key, (Instant, u32)>>,
    capacity: usize,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::with_capacity(Self::CAPACITY)
    }
}

impl Limiter {
    /// Clients counted one by one (about 50 bytes each).
    pub const CAPACITY: usize = 65_536;

    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            failures: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Has `client` failed `limit` times within the minute?
    pub fn blocked(&self, client: IpAddr, limit: u32) -> bool {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let key = key_of(client);
        let key = if map.contains_key(&key) {
            key
        } else {
            Key::Overflow
        };
        match map.get(&key) {
            Some((since, count)) if since.elapsed() < WINDOW => *count >= limit,
            _ => false,
        }
    }

    /// Counts one failure of `client`.
    pub fn fail(&self, client: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = key_of(client);
        if !map.contains_key(&key) && map.len() >= self.capacity {
            map.retain(|_, (since, _)| since.elapsed() < WINDOW);
            if map.len() >= self.capacity {
                key = Key::Overflow;
            }
        }
        let entry = map.entry(key).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// Clients counted one by one now.
    pub fn len(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn networks_parse_and_contain() {
        let net = Network::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(net.contains(ip("::ffff:10.1.2.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        let one = Network::parse("2001:db8::1").unwrap();
        assert!(one.contains(ip("2001:db8::1")));
        assert!(!one.contains(ip("2001:db8::2")));
        assert!(Network::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in ["", "10.0.0.0/33", "::/129", "example.org", "10.0.0.0/x"] {
            assert!(Network::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn forwarding_headers_count_only_from_a_trusted_proxy() {
        let proxies = TrustedProxies::parse(&["127.0.0.1".into(), "10.0.0.0/8".into()]).unwrap();
        let forged = headers(&[
            ("x-forwarded-for", "198.51.100.9"),
            ("x-forwarded-proto", "https"),
        ]);
        // A client talking to us directly names whatever it likes: ignored.
        assert_eq!(
            proxies.origin(ip("203.0.113.5"), &forged),
            Origin {
                client: ip("203.0.113.5"),
                tls: false
            }
        );
        // Through the proxy: the address it saw, and its https.
        assert_eq!(
            proxies.origin(ip("127.0.0.1"), &forged),
            Origin {
                client: ip("198.51.100.9"),
                tls: true
            }
        );
        // A client that sends its own X-Forwarded-For through the proxy
        // gets the proxy's entry appended: the forged left part is skipped.
        let chained = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.9, 10.0.0.2")]);
        assert_eq!(
            proxies.origin(ip("127.0.0.1"), &chained).client,
            ip("198.51.100.9")
        );
        // RFC 7239.
        let standard = headers(&[(
            "forwarded",
            "for=1.2.3.4, for=\"[2001:db8::7]:4711\";proto=https",
        )]);
        assert_eq!(
            proxies.origin(ip("10.9.9.9"), &standard),
            Origin {
                client: ip("2001:db8::7"),
                tls: true
            }
        );
        // No proxies configured: nobody's headers count.
        let none = TrustedProxies::default();
        assert_eq!(
            none.origin(ip("127.0.0.1"), &forged).client,
            ip("127.0.0.1")
        );
    }

    #[test]
    fn limits_count_per_client_and_per_ipv6_64() {
        let limiter = Limiter::default();
        for _ in 0..3 {
            limiter.fail(ip("2001:db8:1:2::1"));
        }
        // Another address in the same /64 is the same client.
        assert!(limiter.blocked(ip("2001:db8:1:2:ffff::9"), 3));
        assert!(!limiter.blocked(ip("2001:db8:1:3::1"), 3));
        limiter.fail(ip("192.0.2.1"));
        assert!(!limiter.blocked(ip("192.0.2.1"), 2));
        limiter.fail(ip("::ffff:192.0.2.1"));
        assert!(limiter.blocked(ip("192.0.2.1"), 2));
        assert!(!limiter.blocked(ip("192.0.2.2"), 2));
    }

    #[test]
    fn a_full_limiter_stays_bounded_and_keeps_the_counts_it_has() {
        let limiter = Limiter::with_capacity(4);
        for _ in 0..5 {
            limiter.fail(ip("192.0.2.1"));
        }
        // A flood of new addresses: they share one bucket.
        for n in 0..1000u32 {
            limiter.fail(IpAddr::from((0x0a00_0000 + n).to_be_bytes()));
        }
        assert!(limiter.len() <= 5, "{}", limiter.len());
        assert!(limiter.blocked(ip("192.0.2.1"), 5), "the count kept");
        assert!(
            limiter.blocked(ip("10.200.0.1"), 10),
            "the flood shares a bucket"
        );
    }
}
