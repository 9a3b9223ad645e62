//! Loopback addresses: a free port, and whether a port is listening.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};

/// `127.0.0.1`.
pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// `127.0.0.n`: every address of 127.0.0.0/8 is the loopback interface, so services of one
/// cluster can each have an address (and a certificate for it) of their own.
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A port on `ip` that nobody listens on right now (the kernel's choice). The service the
/// address is meant for binds it moments later; a harness that starts one retries with
/// another address when it lost that race.
pub fn free_addr(ip: IpAddr) -> io::Result<SocketAddr> {
    TcpListener::bind((ip, 0))?.local_addr()
}

/// Whether a socket listens on `addr` (IPv4), read from `/proc/net/tcp`: unlike a probing
/// connection, looking leaves no trace in the service's logs or audit.
pub fn is_listening(addr: SocketAddr) -> bool {
    let IpAddr::V4(ip) = addr.ip() else {
        return false;
    };
    // The kernel prints the address as the hex of its in-memory (network order) u32 read
    // natively, and the port in host order: `0100007F:1F90` is 127.0.0.1:8080.
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(ip.octets()),
        addr.port()
    );
    let any = format!("{:08X}:{:04X}", 0, addr.port());
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    table.lines().skip(1).any(|line| {
        let mut f = line.split_whitespace();
        let local = f.nth(1).unwrap_or("");
        // State 0A is TCP_LISTEN.
        let state = f.nth(1).unwrap_or("");
        state == "0A" && (local == want || local == any)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_listener_is_seen_and_a_free_port_is_not() {
        let l = TcpListener::bind((loopback(1), 0)).unwrap();
        let addr = l.local_addr().unwrap();
        assert!(is_listening(addr));
        drop(l);
        assert!(!is_listening(addr));
        let free = free_addr(LOCALHOST).unwrap();
        assert!(!is_listening(free));
    }
}
