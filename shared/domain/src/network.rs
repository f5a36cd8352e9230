//! The SSRF guard's rules: which addresses a webhook may reach.
//!
//! Webhook URLs are chosen by users, so without a guard Portico could be made to call
//! its own cluster (databases, metadata services, admin ports). Every address a URL
//! resolves to is checked here, at create time and again at connect time (DNS can
//! change between the two), and refused when it is private, loopback, link-local,
//! CGNAT, multicast, unspecified, reserved, a cloud metadata address, or an
//! IPv4-mapped/-compatible IPv6 form of one of those, unless an operator allowlisted
//! it (`PORTICO_WEBHOOK_ALLOWLIST`, e.g. `127.0.0.0/8` in tests).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::FieldError;

/// An IPv4 or IPv6 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in this network (IPv4-mapped IPv6 addresses match IPv4 networks).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP network"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has an invalid prefix length"))?,
            None => max,
        };
        Ok(Self { network, prefix })
    }
}

/// The operator's allowlist: networks that bypass the guard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist(Vec<Cidr>);

impl Allowlist {
    /// Parses a comma-separated list of CIDRs; empty text is an empty list.
    pub fn parse(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Cidr::from_str)
            .collect::<Result<Vec<_>, _>>()
            .map(Allowlist)
    }

    /// Whether `ip` is allowlisted.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }
}

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockedReason {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918, fc00::/7.
    Private,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// 100.64.0.0/10 (carrier-grade NAT).
    SharedAddressSpace,
    /// Cloud metadata services (169.254.169.254, fd00:ec2::254, 100.100.100.200).
    Metadata,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// Multicast and broadcast.
    Multicast,
    /// Reserved, benchmarking, documentation and other special-purpose ranges.
    Reserved,
}

impl BlockedReason {
    /// A stable name for errors and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockedReason::Loopback => "loopback",
            BlockedReason::Private => "private",
            BlockedReason::LinkLocal => "link_local",
            BlockedReason::SharedAddressSpace => "cgnat",
            BlockedReason::Metadata => "metadata",
            BlockedReason::Unspecified => "unspecified",
            BlockedReason::Multicast => "multicast",
            BlockedReason::Reserved => "reserved",
        }
    }
}

/// IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible (`::a.b.c.d`) IPv6 addresses are
/// judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                if s[..6].iter().all(|x| *x == 0) && !(s[6] == 0 && s[7] <= 1) {
                    IpAddr::V4(Ipv4Addr::new(
                        (s[6] >> 8) as u8,
                        s[6] as u8,
                        (s[7] >> 8) as u8,
                        s[7] as u8,
                    ))
                } else {
                    IpAddr::V6(v6)
                }
            }
        },
        v4 => v4,
    }
}

/// Classifies an address; `None` means publicly routable.
pub fn classify(ip: IpAddr) -> Option<BlockedReason> {
    match canonical(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<BlockedReason> {
    let o = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        return Some(BlockedReason::Metadata);
    }
    if ip.is_loopback() {
        Some(BlockedReason::Loopback)
    } else if ip.is_private() {
        Some(BlockedReason::Private)
    } else if ip.is_link_local() {
        Some(BlockedReason::LinkLocal)
    } else if o[0] == 100 && (o[1] & 0xC0) == 64 {
        Some(BlockedReason::SharedAddressSpace)
    } else if o[0] == 0 {
        Some(BlockedReason::Unspecified)
    } else if ip.is_multicast() || ip.is_broadcast() {
        Some(BlockedReason::Multicast)
    } else if o[0] >= 240
        || (o[0] == 192 && o[1] == 0 && (o[2] == 0 || o[2] == 2))
        || (o[0] == 198 && (o[1] & 0xFE) == 18)
        || (o[0] == 198 && o[1] == 51 && o[2] == 100)
        || (o[0] == 203 && o[1] == 0 && o[2] == 113)
        || (o[0] == 192 && o[1] == 88 && o[2] == 99)
    {
        Some(BlockedReason::Reserved)
    } else {
        None
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<BlockedReason> {
    let s = ip.segments();
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        return Some(BlockedReason::Metadata);
    }
    if ip.is_loopback() {
        Some(BlockedReason::Loopback)
    } else if ip.is_unspecified() {
        Some(BlockedReason::Unspecified)
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some(BlockedReason::Private)
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some(BlockedReason::LinkLocal)
    } else if ip.is_multicast() {
        Some(BlockedReason::Multicast)
    } else if (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] == 0x0064 && s[1] == 0xff9b)
        || s[0] == 0x0100
        || (s[0] & 0xffc0) == 0xfec0
        || (s[0] == 0x2002)
    {
        // Documentation, NAT64 and 6to4 (can embed private IPv4), discard, site-local.
        Some(BlockedReason::Reserved)
    } else {
        None
    }
}

/// Refuses `ip` unless it is public or allowlisted.
pub fn check_ip(ip: IpAddr, allowlist: &Allowlist) -> Result<(), BlockedReason> {
    if allowlist.allows(ip) {
        return Ok(());
    }
    match classify(ip) {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}

/// Validates a webhook URL's form: absolute `http` or `https`, a host, no credentials,
/// at most 2,048 characters. Address checks happen separately (they need DNS).
pub fn parse_webhook_url(text: &str, path: &str) -> Result<url::Url, FieldError> {
    let invalid = |msg: &str| FieldError::new("invalid_url", path, msg.to_owned());
    if text.len() > 2048 {
        return Err(invalid("URL is longer than 2048 characters"));
    }
    let parsed = url::Url::parse(text).map_err(|e| invalid(&format!("not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("URL scheme must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("URL must have a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("URL must not contain credentials"));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Every forbidden range, including IPv6-mapped and -compatible forms, is refused;
    /// public addresses pass; the allowlist opens exactly what it names.
    #[test]
    fn forbidden_ranges_and_allowlist() {
        for (addr, reason) in [
            ("127.0.0.1", BlockedReason::Loopback),
            ("::1", BlockedReason::Loopback),
            ("10.1.2.3", BlockedReason::Private),
            ("172.16.0.1", BlockedReason::Private),
            ("192.168.1.1", BlockedReason::Private),
            ("fd12::1", BlockedReason::Private),
            ("169.254.1.1", BlockedReason::LinkLocal),
            ("fe80::1", BlockedReason::LinkLocal),
            ("100.64.0.1", BlockedReason::SharedAddressSpace),
            ("169.254.169.254", BlockedReason::Metadata),
            ("fd00:ec2::254", BlockedReason::Metadata),
            ("0.0.0.0", BlockedReason::Unspecified),
            ("::", BlockedReason::Unspecified),
            ("224.0.0.1", BlockedReason::Multicast),
            ("::ffff:127.0.0.1", BlockedReason::Loopback),
            ("::ffff:10.0.0.1", BlockedReason::Private),
            ("::ffff:169.254.169.254", BlockedReason::Metadata),
            ("::127.0.0.1", BlockedReason::Loopback),
            ("64:ff9b::a00:1", BlockedReason::Reserved),
        ] {
            assert_eq!(classify(ip(addr)), Some(reason), "{addr}");
        }
        for public in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert_eq!(classify(ip(public)), None, "{public}");
        }
        let allow = Allowlist::parse("127.0.0.0/8, ::1/128").unwrap();
        assert!(check_ip(ip("127.0.0.1"), &allow).is_ok());
        assert!(check_ip(ip("::ffff:127.0.0.2"), &allow).is_ok());
        assert!(check_ip(ip("::1"), &allow).is_ok());
        assert_eq!(
            check_ip(ip("10.0.0.1"), &allow),
            Err(BlockedReason::Private)
        );
        assert!(check_ip(ip("127.0.0.1"), &Allowlist::default()).is_err());
        assert!(Allowlist::parse("10.0.0.0/33").is_err());
        assert!(Allowlist::parse("nonsense").is_err());
    }

    /// URL form checks come with the invalid_url code and the given path.
    #[test]
    fn webhook_url_form() {
        assert!(parse_webhook_url("https://example.com/hook", "/url").is_ok());
        for bad in [
            "ftp://x.com",
            "not a url",
            "https://user:pw@x.com/",
            "http://",
        ] {
            let err = parse_webhook_url(bad, "/url").unwrap_err();
            assert_eq!(
                (err.code.as_str(), err.path.as_str()),
                ("invalid_url", "/url"),
                "{bad}"
            );
        }
    }
}
