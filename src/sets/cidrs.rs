//! A set of IPv4 and IPv6 ranges: the listed networks sorted and merged
//! into disjoint ranges, found by binary search. Each range remembers the
//! first entry and line it came from, for `tproxyd explain`.

use ipnet::IpNet;
use std::net::IpAddr;

/// One merged range: first and last address, and the entry that began it.
#[derive(Debug, Clone, Copy)]
struct Range<T> {
    start: T,
    end: T,
    net: IpNet,
    line: u64,
}

/// The entry an address matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetHit {
    /// The listed network (the first of those merged into the range).
    pub net: IpNet,
    /// Its line in the file.
    pub line: u64,
}

/// A built address set.
#[derive(Debug, Default)]
pub struct CidrSet {
    v4: Vec<Range<u32>>,
    v6: Vec<Range<u128>>,
    entries: usize,
}

fn merge<T: Ord + Copy>(mut ranges: Vec<Range<T>>, next: impl Fn(T) -> Option<T>) -> Vec<Range<T>> {
    ranges.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
    let mut out: Vec<Range<T>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            // Overlapping or adjacent: one range.
            Some(last) if next(last.end).is_none_or(|n| r.start <= n) => {
                last.end = last.end.max(r.end);
            }
            _ => out.push(r),
        }
    }
    out.shrink_to_fit();
    out
}

fn find<T: Ord + Copy>(ranges: &[Range<T>], ip: T) -> Option<&Range<T>> {
    let i = ranges.partition_point(|r| r.start <= ip);
    ranges[..i].last().filter(|r| ip <= r.end)
}

impl CidrSet {
    /// From the listed networks with their lines.
    pub fn build(nets: Vec<(IpNet, u64)>) -> CidrSet {
        let entries = nets.len();
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for (net, line) in nets {
            match net {
                IpNet::V4(n) => v4.push(Range {
                    start: u32::from(n.network()),
                    end: u32::from(n.broadcast()),
                    net,
                    line,
                }),
                IpNet::V6(n) => v6.push(Range {
                    start: u128::from(n.network()),
                    end: u128::from(n.broadcast()),
                    net,
                    line,
                }),
            }
        }
        CidrSet {
            v4: merge(v4, |x: u32| x.checked_add(1)),
            v6: merge(v6, |x: u128| x.checked_add(1)),
            entries,
        }
    }

    /// How many entries were listed.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether none were.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Bytes the set takes.
    pub fn size(&self) -> usize {
        self.v4.len() * std::mem::size_of::<Range<u32>>()
            + self.v6.len() * std::mem::size_of::<Range<u128>>()
    }

    /// The listed network covering `ip` (v4-mapped v6 taken as v4).
    pub fn lookup(&self, ip: IpAddr) -> Option<NetHit> {
        let r = match ip.to_canonical() {
            IpAddr::V4(v4) => find(&self.v4, u32::from(v4)).map(|r| (r.net, r.line)),
            IpAddr::V6(v6) => find(&self.v6, u128::from(v6)).map(|r| (r.net, r.line)),
        };
        r.map(|(net, line)| NetHit { net, line })
    }

    /// Whether `ip` is listed.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.lookup(ip).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_ranges_and_lookups() {
        let nets = [
            "10.0.0.0/8",
            "10.1.0.0/16",
            "192.0.2.7",
            "192.0.2.8/31",
            "2001:db8::/32",
        ];
        let s = CidrSet::build(
            nets.iter()
                .enumerate()
                .map(|(i, n)| (crate::addr::parse_net(n).unwrap(), i as u64 + 1))
                .collect(),
        );
        let one = CidrSet::build(vec![("203.0.113.0/24".parse().unwrap(), 1)]);
        assert!(!one.contains("198.51.100.10".parse().unwrap()));
        assert_eq!(s.len(), 5);
        let hit = |ip: &str| {
            s.lookup(ip.parse().unwrap())
                .map(|h| (h.net.to_string(), h.line))
        };
        assert_eq!(hit("10.1.2.3"), Some(("10.0.0.0/8".into(), 1)));
        assert_eq!(hit("192.0.2.7"), Some(("192.0.2.7/32".into(), 3)));
        assert_eq!(
            hit("192.0.2.9").map(|h| h.1),
            Some(3),
            "adjacent ranges merge"
        );
        assert_eq!(hit("192.0.2.10"), None);
        assert_eq!(hit("::ffff:10.9.9.9").map(|h| h.1), Some(1));
        assert_eq!(hit("2001:db8:1::1").map(|h| h.1), Some(5));
        assert_eq!(hit("2001:db9::1"), None);
        assert_eq!(hit("11.0.0.0"), None);
        let all = CidrSet::build(vec![("0.0.0.0/0".parse().unwrap(), 1)]);
        assert!(all.contains("255.255.255.255".parse().unwrap()));
    }
}
