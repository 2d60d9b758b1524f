//! What Envoy calls local info: facts about this host, found once.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

/// The address Envoy's `LocalInfo` reports (`Network::Utility::getLocalAddress`:
/// the first non-loopback IPv4 address of the host): here the source address
/// of the default route, found by connecting a UDP socket (nothing is sent);
/// 127.0.0.1 when there is no route.
/// Found once per process: it is read per request (x-forwarded-for).
pub fn address() -> IpAddr {
    static ADDRESS: OnceLock<IpAddr> = OnceLock::new();
    *ADDRESS.get_or_init(find)
}

fn find() -> IpAddr {
    std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| {
            s.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}
