//! Small helpers every component may use, so none has to reach into another for them: the process-wide TLS
//! crypto provider, whether this process runs as root, IPv4 CIDR parsing, and (Linux) netlink: links and the
//! addresses of the loopback device; the clock and randomness the simulation can replace ([`clock`]). Nothing here knows about objects, the store or HTTP.

pub mod clock;
pub mod flag;
#[cfg(target_os = "linux")]
pub mod netlink;

use std::net::Ipv4Addr;

/// Why a CIDR was refused: not `a.b.c.d/len`, or a prefix length outside what its user allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadCidr {
    #[error("{0:?}: expected ADDRESS/PREFIX")]
    Format(String),
    #[error("{cidr:?}: {address:?} is not an IPv4 address")]
    Address { cidr: String, address: String },
    #[error("{cidr:?}: the prefix must be {min} to {max}")]
    Prefix { cidr: String, min: u8, max: u8 },
}

/// Parses `a.b.c.d/len` with `len` in `min..=max`; the address is masked to its network.
pub fn parse_cidr_in(cidr: &str, min: u8, max: u8) -> Result<(Ipv4Addr, u8), BadCidr> {
    let (addr, len) = cidr
        .split_once('/')
        .ok_or_else(|| BadCidr::Format(cidr.to_string()))?;
    let ip: Ipv4Addr = addr.parse().map_err(|_| BadCidr::Address {
        cidr: cidr.to_string(),
        address: addr.to_string(),
    })?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| (min..=max).contains(l))
        .ok_or_else(|| BadCidr::Prefix {
            cidr: cidr.to_string(),
            min,
            max,
        })?;
    let mask = u32::MAX << (32 - len);
    Ok((Ipv4Addr::from(u32::from(ip) & mask), len))
}

/// Installs rustls' process-wide crypto provider (ring); idempotent, so every TLS user calls it first.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Whether this process runs as root (bridge networking, port 53, service VIPs on interfaces).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Parses an IPv4 CIDR, returning its network address (host bits cleared) and prefix length.
pub fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u8), BadCidr> {
    parse_cidr_in(cidr, 8, 30)
}

/// The IP addresses of this machine's interfaces (what a server listening on 0.0.0.0 or :: answers on).
pub fn local_addresses() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that is only read here and then freed with freeifaddrs.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut cur = list;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        out.push(std::net::IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(std::net::IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out.sort();
    out.dedup();
    out
}

/// Writes `bytes` to `path` readable by its owner only (mode 0600), synced: keys, tokens, passwords.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The SHA-256 of `bytes`, in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_to_their_network() {
        assert_eq!(
            parse_cidr("10.1.1.7/29").unwrap(),
            (Ipv4Addr::new(10, 1, 1, 0), 29)
        );
        assert!(parse_cidr("10.1.1.0").is_err());
        assert!(parse_cidr("10.1.1.0/31").is_err());
        assert!(parse_cidr("300.1.1.0/24").is_err());
    }
}
