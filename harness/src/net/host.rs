//! What this host already uses: interface addresses and routes. Only meaningful when libvirt runs
//! on this host; for a remote libvirt, its own refusal to start a network on a used subnet is the
//! check (see [`crate::net::create_pair`]).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// IPv4 subnets of every address on a host interface.
pub fn interface_subnets() -> Vec<Ipv4Net> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            let mask = a.netmask?.as_sockaddr_in()?.ip();
            Ipv4Net::new(ip, u32::from(mask).count_ones() as u8)
                .ok()
                .map(|n| n.trunc())
        })
        .collect()
}

/// IPv4 route destinations from `/proc/net/route` (all tables' main view).
pub fn route_subnets() -> Vec<Ipv4Net> {
    std::fs::read_to_string("/proc/net/route")
        .map(|t| parse_proc_net_route(&t))
        .unwrap_or_default()
}

fn parse_proc_net_route(text: &str) -> Vec<Ipv4Net> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // The kernel prints the address's bytes as one native-endian number.
            let dest = Ipv4Addr::from(dest.to_ne_bytes());
            let mask = Ipv4Addr::from(mask.to_ne_bytes());
            Ipv4Net::new(dest, u32::from(mask).count_ones() as u8).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_endian = "little")]
    fn proc_net_route_is_decoded() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    virbr0\t007AA8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let got = parse_proc_net_route(text);
        assert_eq!(
            got,
            vec![
                "0.0.0.0/0".parse::<Ipv4Net>().unwrap(),
                "192.168.122.0/24".parse().unwrap()
            ]
        );
    }

    #[test]
    fn this_host_has_loopback() {
        assert!(interface_subnets()
            .iter()
            .any(|n| n.contains(&Ipv4Addr::LOCALHOST)));
    }
}
