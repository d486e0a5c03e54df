//! Subnet choice: a pure function of the pool and what is taken. The allocator
//! ([`crate::net::create_pair`]) gathers what is taken and holds the lock.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::{Error, Result};

/// The default pool: 10.208.0.0/12 cut into /24s, 4096 subnets. It lies clear of every subnet
/// minikube picks by itself, libvirt's default network, Kubernetes' service range and the usual
/// pod ranges, and of Docker's default bridge pools (172.17-31, 192.168).
pub const DEFAULT_POOL: &str = "10.208.0.0/12";
pub const DEFAULT_PREFIX: u8 = 24;

/// Subnets mkh never hands out, whatever pool is configured.
pub fn reserved() -> Vec<Ipv4Net> {
    // minikube's own candidates: 192.168.39.0/24, then the third octet steps by 11 up to 248.
    let mut out: Vec<Ipv4Net> = (39..=248)
        .step_by(11)
        .map(|third| Ipv4Net::new(Ipv4Addr::new(192, 168, third, 0), 24).expect("valid"))
        .collect();
    for fixed in [
        "192.168.122.0/24", // libvirt's `default`
        "10.96.0.0/12",     // Kubernetes' service range (minikube's default)
        "172.17.0.0/16",    // Docker's bridge, minikube's pod network
        "10.244.0.0/16",    // the usual pod CIDR (flannel, kindnet)
    ] {
        out.push(fixed.parse().expect("valid"));
    }
    out
}

/// Where an environment's subnets come from: `range` cut into subnets of length `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetPool {
    /// The range, e.g. 10.208.0.0/12.
    pub range: Ipv4Net,
    /// Each subnet's prefix length, e.g. 24.
    pub prefix: u8,
}

impl Default for SubnetPool {
    fn default() -> Self {
        SubnetPool {
            range: DEFAULT_POOL.parse().expect("valid"),
            prefix: DEFAULT_PREFIX,
        }
    }
}

impl SubnetPool {
    /// A pool from a CIDR and a prefix length, as `MKH_SUBNET_POOL` and `MKH_SUBNET_PREFIX`
    /// write them.
    pub fn parse(range: &str, prefix: &str) -> Result<SubnetPool> {
        let range: Ipv4Net = range.trim().parse().map_err(|e| Error::InvalidInput {
            what: "subnet pool (MKH_SUBNET_POOL)",
            value: range.to_owned(),
            problem: format!("it is not an IPv4 CIDR ({e})"),
            fix: "write it like 10.208.0.0/12",
        })?;
        let prefix: u8 = prefix.trim().parse().map_err(|e| Error::InvalidInput {
            what: "subnet prefix (MKH_SUBNET_PREFIX)",
            value: prefix.to_owned(),
            problem: format!("it is not a number ({e})"),
            fix: "write a prefix length between the pool's and 29, e.g. 24",
        })?;
        if prefix < range.prefix_len() || prefix > 29 {
            return Err(Error::InvalidInput {
                what: "subnet prefix (MKH_SUBNET_PREFIX)",
                value: prefix.to_string(),
                problem: format!(
                    "it must lie between the pool's /{} and /29",
                    range.prefix_len()
                ),
                fix: "write a prefix length between the pool's and 29, e.g. 24",
            });
        }
        Ok(SubnetPool {
            range: range.trunc(),
            prefix,
        })
    }

    /// Every subnet of the pool that is not reserved, in address order.
    pub fn candidates(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        let reserved = reserved();
        self.range
            .subnets(self.prefix)
            .expect("prefix checked at construction")
            .filter(move |s| !reserved.iter().any(|r| overlaps(r, s)))
    }

    /// How many candidates overlap nothing in `taken`.
    pub fn free(&self, taken: &[Ipv4Net]) -> usize {
        let is_taken = taken_by(taken);
        self.candidates().filter(|c| !is_taken(c)).count()
    }

    /// Picks `count` subnets that overlap nothing in `taken`. The search starts at `start` (an
    /// index into the candidates, wrapping) so concurrent allocators spread over the pool instead
    /// of all trying its first subnet.
    pub fn choose(&self, taken: &[Ipv4Net], count: usize, start: usize) -> Result<Vec<Ipv4Net>> {
        let candidates: Vec<Ipv4Net> = self.candidates().collect();
        let total = candidates.len();
        let is_taken = taken_by(taken);
        let free: Vec<Ipv4Net> = (0..total)
            .map(|i| candidates[(start + i) % total.max(1)])
            .filter(|c| !is_taken(c))
            .take(count)
            .collect();
        if free.len() < count {
            let in_use = candidates.iter().filter(|c| is_taken(c)).count();
            return Err(Error::PoolExhausted {
                pool: self.range.to_string(),
                prefix: self.prefix,
                total,
                in_use,
            });
        }
        Ok(free)
    }
}

/// Whether a candidate overlaps something in `taken` (a default route, /0, takes nothing).
fn taken_by(taken: &[Ipv4Net]) -> impl Fn(&Ipv4Net) -> bool + '_ {
    move |c| taken.iter().any(|t| t.prefix_len() > 0 && overlaps(t, c))
}

pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn default_pool_is_large_and_avoids_what_minikube_and_kubernetes_use() {
        let pool = SubnetPool::default();
        let all: Vec<_> = pool.candidates().collect();
        assert!(all.len() > 20 * 100, "only {} subnets", all.len());
        for r in reserved() {
            assert!(!all.iter().any(|c| overlaps(c, &r)), "{r} is offered");
        }
        assert!(reserved().contains(&net("192.168.39.0/24")));
        assert!(reserved().contains(&net("192.168.248.0/24")));
        assert_eq!(
            reserved().iter().filter(|r| r.prefix_len() == 24).count(),
            21
        );
    }

    #[test]
    fn a_pool_overlapping_reserved_ranges_skips_them() {
        let pool = SubnetPool::parse("192.168.32.0/20", "24").unwrap();
        let got: Vec<_> = pool.candidates().collect();
        assert!(!got.contains(&net("192.168.39.0/24")));
        assert!(got.contains(&net("192.168.40.0/24")));
        assert_eq!(got.len(), 15);
    }

    #[test]
    fn choice_skips_taken_subnets_and_host_routes_but_not_default_routes() {
        let pool = SubnetPool::parse("10.1.0.0/22", "24").unwrap();
        let taken = [net("0.0.0.0/0"), net("10.1.0.0/24"), net("10.1.1.7/32")];
        let got = pool.choose(&taken, 2, 0).unwrap();
        assert_eq!(got, vec![net("10.1.2.0/24"), net("10.1.3.0/24")]);
    }

    #[test]
    fn a_wider_taken_range_covers_its_subnets() {
        let pool = SubnetPool::parse("10.1.0.0/22", "24").unwrap();
        let got = pool.choose(&[net("10.1.0.0/23")], 1, 0).unwrap();
        assert_eq!(got, vec![net("10.1.2.0/24")]);
    }

    #[test]
    fn start_offset_wraps() {
        let pool = SubnetPool::parse("10.1.0.0/22", "24").unwrap();
        let got = pool.choose(&[], 2, 3).unwrap();
        assert_eq!(got, vec![net("10.1.3.0/24"), net("10.1.0.0/24")]);
    }

    #[test]
    fn exhaustion_names_the_pool_and_the_count_in_use() {
        let pool = SubnetPool::parse("10.1.0.0/23", "24").unwrap();
        let err = pool
            .choose(&[net("10.1.0.0/24")], 2, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("10.1.0.0/23"), "{err}");
        assert!(
            err.contains("all 2 /24 subnets") && err.contains("1 by"),
            "{err}"
        );
    }

    #[test]
    fn bad_pool_settings_are_refused() {
        assert!(SubnetPool::parse("10.1.0.0", "24").is_err());
        assert!(SubnetPool::parse("10.1.0.0/16", "8").is_err());
        assert!(SubnetPool::parse("10.1.0.0/16", "30").is_err());
        let err = SubnetPool::parse("nope", "24").unwrap_err().to_string();
        assert!(err.contains("MKH_SUBNET_POOL"), "{err}");
    }
}
