//! The private network's subnet, chosen as minikube's `pkg/network` does: candidates
//! 192.168.39.0/24, then the third octet steps by 11 (50, 61, ... 248); a candidate is taken when
//! an address of a host interface lies in it (defined-but-inactive libvirt networks are NOT
//! looked at, as in minikube), or when another process holds its reservation, a flock on
//! `$TMPDIR/minikube-locks-<uid>/subnet-<a.b.c.d>` kept for this process's life.

use std::fs::{self, File, OpenOptions};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

pub const FIRST_THIRD_OCTET: u8 = 39;
pub const STEP: u8 = 11;
/// minikube tries 20 candidates.
pub const TRIES: usize = 20;

/// The candidates in order: 192.168.39.0, 192.168.50.0, ... 192.168.248.0.
pub fn candidates() -> Vec<Ipv4Addr> {
    (0..TRIES)
        .map(|i| FIRST_THIRD_OCTET as usize + i * STEP as usize)
        .take_while(|&o| o <= 255)
        .map(|o| Ipv4Addr::new(192, 168, o as u8, 0))
        .collect()
}

/// A /24 as kvm2's network template uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    /// The host side (`<ip address=...>`): the first address.
    pub gateway: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub client_min: Ipv4Addr,
    /// The last client address minus one (kept for an HA VIP, as kvm2 does).
    pub client_max: Ipv4Addr,
}

impl Subnet {
    pub fn of(network: Ipv4Addr) -> Subnet {
        let base = u32::from(network) & 0xffff_ff00;
        Subnet {
            network: Ipv4Addr::from(base),
            gateway: Ipv4Addr::from(base + 1),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            client_min: Ipv4Addr::from(base + 2),
            // .255 broadcast, .254 last client, .253 = last client minus one.
            client_max: Ipv4Addr::from(base + 253),
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & 0xffff_ff00 == u32::from(self.network)
    }
}

/// The first candidate that no host address lies in and that `reserve` accepts.
pub fn choose<R>(
    host_addrs: &[Ipv4Addr],
    mut reserve: impl FnMut(Ipv4Addr) -> Option<R>,
) -> Option<(Subnet, R)> {
    candidates().into_iter().find_map(|net| {
        let subnet = Subnet::of(net);
        if host_addrs.iter().any(|&a| subnet.contains(a)) {
            return None;
        }
        reserve(net).map(|r| (subnet, r))
    })
}

/// Every IPv4 address on a host interface.
pub fn host_ipv4_addrs() -> Vec<Ipv4Addr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|s| s.as_sockaddr_in().map(|sin| sin.ip()))
        .collect()
}

/// A held reservation of one subnet; released when dropped (or when the process exits).
#[derive(Debug)]
pub struct Reservation {
    _lock: Flock<File>,
}

/// Tries to reserve `net` without waiting; `None` when another process holds it.
pub fn reserve(lock_dir: &Path, net: Ipv4Addr) -> Option<Reservation> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(lock_dir)
        .ok()?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(lock_dir.join(format!("subnet-{net}")))
        .ok()?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .ok()
        .map(|lock| Reservation { _lock: lock })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_candidates_from_39_by_11_up_to_248() {
        let c = candidates();
        assert_eq!(c.len(), 20);
        assert_eq!(c[0], Ipv4Addr::new(192, 168, 39, 0));
        assert_eq!(c[1], Ipv4Addr::new(192, 168, 50, 0));
        assert_eq!(c[2], Ipv4Addr::new(192, 168, 61, 0));
        assert_eq!(*c.last().unwrap(), Ipv4Addr::new(192, 168, 248, 0));
    }

    #[test]
    fn dhcp_range_is_the_client_range_minus_the_last_address() {
        let s = Subnet::of(Ipv4Addr::new(192, 168, 39, 0));
        assert_eq!(s.gateway, Ipv4Addr::new(192, 168, 39, 1));
        assert_eq!(s.client_min, Ipv4Addr::new(192, 168, 39, 2));
        assert_eq!(s.client_max, Ipv4Addr::new(192, 168, 39, 253));
        assert!(s.contains(Ipv4Addr::new(192, 168, 39, 77)));
        assert!(!s.contains(Ipv4Addr::new(192, 168, 40, 1)));
    }

    #[test]
    fn taken_means_a_host_address_inside_or_a_reservation_held_elsewhere() {
        let host = [
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(192, 168, 39, 1),
            Ipv4Addr::new(192, 168, 50, 200),
        ];
        let (s, ()) = choose(&host, |_| Some(())).unwrap();
        assert_eq!(s.network, Ipv4Addr::new(192, 168, 61, 0));
        // 61 is reserved by someone else: next.
        let (s, ()) = choose(&host, |n| {
            (n != Ipv4Addr::new(192, 168, 61, 0)).then_some(())
        })
        .unwrap();
        assert_eq!(s.network, Ipv4Addr::new(192, 168, 72, 0));
        // Everything taken: none (minikube: "no free private network subnets found").
        assert!(choose(&host, |_| None::<()>).is_none());
    }

    #[test]
    fn a_reservation_excludes_other_holders_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let net = Ipv4Addr::new(192, 168, 39, 0);
        let held = reserve(dir.path(), net).expect("first reservation");
        // flock is per open file description: a second open in this process conflicts too.
        assert!(reserve(dir.path(), net).is_none());
        drop(held);
        assert!(reserve(dir.path(), net).is_some());
    }
}
