//! The SSRF guard's rules: which addresses a webhook may reach.
//!
//! Webhook URLs are chosen by users, so without a guard Portico could be made to call
//! its own cluster (databases, metadata services, admin ports). Every address a URL
//! resolves to is checked here, at create time and again at connect time (DNS can
//! change between the two), and refused when it is private, loopback, link-local,
//! CGNAT, multicast, unspecified, reserved or a cloud metadata address, unless an
//! operator allowlisted it (`PORTICO_WEBHOOK_ALLOWLIST`, e.g. `127.0.0.0/8` in tests).
//!
//! # IPv6 addresses that carry an IPv4 address
//!
//! Several IPv6 forms embed an IPv4 address ([`embedded_ipv4`]); each is handled so
//! that none of them is a way around the IPv4 rules:
//!
//! | form | range | verdict |
//! |---|---|---|
//! | IPv4-mapped | `::ffff:0:0/96` | judged as the IPv4 address |
//! | IPv4-translated (SIIT) | `::ffff:0:0:0/96` | judged as the IPv4 address |
//! | IPv4-compatible (deprecated) | `::/96` except `::` and `::1` | judged as the IPv4 address |
//! | NAT64 well-known prefix | `64:ff9b::/96` | judged as the IPv4 address |
//! | NAT64 local use | `64:ff9b:1::/48` | always refused (the IPv4 address sits where the operator's prefix length puts it) |
//! | 6to4 (deprecated) | `2002::/16`, IPv4 in bits 16..48 | always refused; the reason is the IPv4 address's when it has one |
//! | Teredo | `2001::/32`, client IPv4 obfuscated in the last 32 bits | always refused (with the rest of `2001::/23`); the reason is the client's when it has one |
//! | ISATAP interface id | `<prefix>:0:5efe:a.b.c.d` (also `200:5efe`, `100:5efe`, `300:5efe`) | refused when the IPv4 address is refused, else judged by the IPv6 rules |
//!
//! The first four are *translations*: connecting to them reaches the IPv4 host itself
//! (through the kernel's dual stack or a NAT64 gateway), so the allowlist's IPv4
//! networks apply to them too: with `127.0.0.0/8` allowlisted, `::ffff:127.0.0.1` is
//! allowed exactly like `127.0.0.1`. 6to4, Teredo and ISATAP are *tunnels*: they reach
//! an IPv6 host behind the IPv4 address, not the IPv4 host, so only an IPv6 network
//! in the allowlist opens them (`2002::/16` would).
//!
//! Beyond those, only global unicast (`2000::/3`) is reachable: everything else in
//! IPv6 is unassigned or special-purpose and refused as reserved, as are the
//! special-purpose blocks inside it (documentation `2001:db8::/32` and `3fff::/20`,
//! IETF protocol assignments `2001::/23`, SRv6 SIDs `5f00::/16`).

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
    /// Whether `ip` lies in this network. An IPv6 translation of an IPv4 address
    /// (mapped, translated, compatible, NAT64) also matches the IPv4 networks that hold
    /// the address it carries; tunnel forms (6to4, Teredo, ISATAP) match only as IPv6.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let translated = translation(ip);
        self.contains_exactly(ip) || translated.is_some_and(|v4| self.contains_exactly(v4.into()))
    }

    fn contains_exactly(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
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

    /// The allowlist a service runs with: `PORTICO_WEBHOOK_ALLOWLIST` (`text`), plus the
    /// loopback networks ([`DEV_LOOPBACK`]) in development mode (`PORTICO_DEV_MODE`),
    /// so a developer can point a webhook at a server on their own machine without
    /// configuring anything; never outside it. The flag says whether dev mode added
    /// loopback, so the service logs a warning at start. The one place that decides.
    pub fn for_service(text: &str, dev_mode: bool) -> Result<(Self, bool), String> {
        let mut list = Self::parse(text)?;
        if !dev_mode {
            return Ok((list, false));
        }
        list.0.extend(Self::parse(DEV_LOOPBACK)?.0);
        Ok((list, true))
    }
}

/// What development mode adds to the allowlist: IPv4 and IPv6 loopback.
pub const DEV_LOOPBACK: &str = "127.0.0.0/8, ::1/128";

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

/// How an IPv6 address carries an IPv4 address (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedding {
    /// `::ffff:a.b.c.d` (RFC 4291): a dual-stack socket reaches the IPv4 host.
    Mapped,
    /// `::ffff:0:a.b.c.d` (RFC 2765, SIIT): a translator reaches the IPv4 host.
    Translated,
    /// `::a.b.c.d` (RFC 4291, deprecated); not `::` and `::1`.
    Compatible,
    /// `64:ff9b::a.b.c.d` (RFC 6052 well-known prefix): a NAT64 gateway reaches the
    /// IPv4 host.
    Nat64,
    /// `2002:aabb:ccdd::/48` (RFC 3056): an IPv6 site behind the 6to4 router
    /// `aa.bb.cc.dd`.
    SixToFour,
    /// `2001:0:<server>:<flags>:<port>:<client>` (RFC 4380): an IPv6 host behind the
    /// NAT whose address is the client field, bit-inverted.
    Teredo,
    /// `<prefix>:0:5efe:a.b.c.d` (RFC 5214): an ISATAP host reached through the IPv4
    /// address `a.b.c.d` of its site.
    Isatap,
}

impl Embedding {
    /// Whether connecting to the IPv6 address reaches the IPv4 host itself (rather
    /// than an IPv6 host tunnelled through it).
    pub fn is_translation(self) -> bool {
        matches!(
            self,
            Embedding::Mapped | Embedding::Translated | Embedding::Compatible | Embedding::Nat64
        )
    }
}

fn v4_from(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
}

/// The IPv4 address an IPv6 address carries, and how it carries it; `None` for an
/// IPv6 address of no such form.
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<(Ipv4Addr, Embedding)> {
    let s = ip.segments();
    let v4 = v4_from(s[6], s[7]);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some((v4, Embedding::Mapped)),
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some((v4, Embedding::Translated)),
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some((v4, Embedding::Compatible)),
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] => Some((v4, Embedding::Nat64)),
        [0x2002, hi, lo, ..] => Some((v4_from(hi, lo), Embedding::SixToFour)),
        [0x2001, 0, ..] => Some((v4_from(!s[6], !s[7]), Embedding::Teredo)),
        [_, _, _, _, ug, 0x5efe, _, _] if ug & 0xfcff == 0 => Some((v4, Embedding::Isatap)),
        _ => None,
    }
}

/// The IPv4 address `ip` stands for when it is one, or an IPv6 translation of one.
fn translation(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => embedded_ipv4(v6)
            .filter(|(_, how)| how.is_translation())
            .map(|(v4, _)| v4),
    }
}

/// Classifies an address; `None` means publicly routable.
pub fn classify(ip: IpAddr) -> Option<BlockedReason> {
    match ip {
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
        return Some(BlockedReason::Loopback);
    }
    if ip.is_unspecified() {
        return Some(BlockedReason::Unspecified);
    }
    let embedded = embedded_ipv4(ip);
    match embedded {
        Some((v4, how)) if how.is_translation() => return classify_v4(v4),
        // Tunnels: refused whatever they carry, named after what they carry.
        Some((v4, Embedding::SixToFour | Embedding::Teredo)) => {
            return Some(classify_v4(v4).unwrap_or(BlockedReason::Reserved));
        }
        _ => {}
    }
    if (s[0] & 0xfe00) == 0xfc00 {
        Some(BlockedReason::Private)
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some(BlockedReason::LinkLocal)
    } else if ip.is_multicast() {
        Some(BlockedReason::Multicast)
    } else if (s[0] & 0xe000) != 0x2000
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] == 0x2001 && s[1] < 0x0200)
        || (s[0] & 0xfff0) == 0x3ff0
        || s[0] == 0x5f00
    {
        // Outside global unicast (unassigned, NAT64 local use, discard-only,
        // site-local, ...), documentation, IETF protocol assignments, SRv6 SIDs.
        Some(BlockedReason::Reserved)
    } else if let Some((v4, Embedding::Isatap)) = embedded {
        classify_v4(v4)
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

    /// Dev mode opens loopback (and only loopback) on top of the operator's list;
    /// outside dev mode loopback stays refused.
    #[test]
    fn dev_mode_opens_loopback_only() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        let private: IpAddr = "10.0.0.1".parse().unwrap();
        let (prod, opened) = Allowlist::for_service("", false).unwrap();
        assert!(!opened);
        assert!(check_ip(loopback, &prod).is_err());
        let (dev, opened) = Allowlist::for_service("", true).unwrap();
        assert!(opened);
        assert!(check_ip(loopback, &dev).is_ok());
        assert!(check_ip(v6, &dev).is_ok());
        assert!(check_ip(private, &dev).is_err());
        let (both, _) = Allowlist::for_service("10.0.0.0/8", true).unwrap();
        assert!(check_ip(private, &both).is_ok() && check_ip(loopback, &both).is_ok());
        assert!(Allowlist::for_service("nope", true).is_err());
    }

    /// Every forbidden range is refused; public addresses pass; the allowlist opens
    /// exactly what it names.
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
            ("100.100.100.200", BlockedReason::Metadata),
            ("fd00:ec2::254", BlockedReason::Metadata),
            ("0.0.0.0", BlockedReason::Unspecified),
            ("::", BlockedReason::Unspecified),
            ("224.0.0.1", BlockedReason::Multicast),
            ("255.255.255.255", BlockedReason::Multicast),
            ("ff02::1", BlockedReason::Multicast),
            ("240.0.0.1", BlockedReason::Reserved),
            ("192.0.2.1", BlockedReason::Reserved),
            ("198.18.0.1", BlockedReason::Reserved),
            ("2001:db8::1", BlockedReason::Reserved),
            ("3fff::1", BlockedReason::Reserved),
            ("2001:2::1", BlockedReason::Reserved),
            ("5f00::1", BlockedReason::Reserved),
            ("100::1", BlockedReason::Reserved),
            ("fec0::1", BlockedReason::Reserved),
            ("4000::1", BlockedReason::Reserved),
        ] {
            assert_eq!(classify(ip(addr)), Some(reason), "{addr}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "2a00:1450:4001:80b::200e",
            "2001:200::1",
        ] {
            assert_eq!(classify(ip(public)), None, "{public}");
        }
        let allow = Allowlist::parse("127.0.0.0/8, ::1/128").unwrap();
        assert!(check_ip(ip("127.0.0.1"), &allow).is_ok());
        assert!(check_ip(ip("::1"), &allow).is_ok());
        assert_eq!(
            check_ip(ip("10.0.0.1"), &allow),
            Err(BlockedReason::Private)
        );
        assert!(check_ip(ip("127.0.0.1"), &Allowlist::default()).is_err());
        assert!(Allowlist::parse("10.0.0.0/33").is_err());
        assert!(Allowlist::parse("nonsense").is_err());
    }

    /// Every IPv6 form that embeds an IPv4 address, with its verdict without an
    /// allowlist and with the test allowlist `127.0.0.0/8, ::1/128`. Translations
    /// (mapped, translated, compatible, NAT64) are judged, and allowlisted, as their
    /// IPv4 address; tunnels (6to4, Teredo) are always refused, named after what they
    /// carry; ISATAP interface ids are refused when what they carry is.
    #[test]
    fn every_ipv6_form_that_embeds_ipv4() {
        use BlockedReason::*;
        use Embedding::*;
        let allow = Allowlist::parse("127.0.0.0/8, ::1/128").unwrap();
        type Verdict = Option<BlockedReason>;
        type Row = (
            &'static str,
            Option<(&'static str, Embedding)>,
            Verdict,
            Verdict,
        );
        #[rustfmt::skip]
        let table: &[Row] = &[
            // address                    embedded IPv4 and form            no allowlist        allowlist
            // IPv4-mapped ::ffff:0:0/96
            ("::ffff:127.0.0.1",          Some(("127.0.0.1", Mapped)),       Some(Loopback),     None),
            ("::ffff:7f00:1",             Some(("127.0.0.1", Mapped)),       Some(Loopback),     None),
            ("::ffff:10.0.0.1",           Some(("10.0.0.1", Mapped)),        Some(Private),      Some(Private)),
            ("::ffff:169.254.169.254",    Some(("169.254.169.254", Mapped)), Some(Metadata),     Some(Metadata)),
            ("::ffff:0.0.0.0",            Some(("0.0.0.0", Mapped)),         Some(Unspecified),  Some(Unspecified)),
            ("::ffff:8.8.8.8",            Some(("8.8.8.8", Mapped)),         None,               None),
            // IPv4-translated ::ffff:0:0:0/96 (the reported bypass)
            ("::ffff:0:127.0.0.1",        Some(("127.0.0.1", Translated)),   Some(Loopback),     None),
            ("::ffff:0:7f00:1",           Some(("127.0.0.1", Translated)),   Some(Loopback),     None),
            ("::ffff:0:192.168.0.1",      Some(("192.168.0.1", Translated)), Some(Private),      Some(Private)),
            ("::ffff:0:169.254.169.254",  Some(("169.254.169.254", Translated)), Some(Metadata), Some(Metadata)),
            ("::ffff:0:8.8.8.8",          Some(("8.8.8.8", Translated)),     None,               None),
            // IPv4-compatible ::/96 (deprecated); :: and ::1 keep their IPv6 meaning
            ("::127.0.0.1",               Some(("127.0.0.1", Compatible)),   Some(Loopback),     None),
            ("::10.0.0.1",                Some(("10.0.0.1", Compatible)),    Some(Private),      Some(Private)),
            ("::0.0.0.2",                 Some(("0.0.0.2", Compatible)),     Some(Unspecified),  Some(Unspecified)),
            ("::8.8.8.8",                 Some(("8.8.8.8", Compatible)),     None,               None),
            ("::1",                       None,                              Some(Loopback),     None),
            ("::",                        None,                              Some(Unspecified),  Some(Unspecified)),
            // NAT64 well-known prefix 64:ff9b::/96
            ("64:ff9b::127.0.0.1",        Some(("127.0.0.1", Nat64)),        Some(Loopback),     None),
            ("64:ff9b::a00:1",            Some(("10.0.0.1", Nat64)),         Some(Private),      Some(Private)),
            ("64:ff9b::169.254.169.254",  Some(("169.254.169.254", Nat64)),  Some(Metadata),     Some(Metadata)),
            ("64:ff9b::100.64.0.1",       Some(("100.64.0.1", Nat64)),       Some(SharedAddressSpace), Some(SharedAddressSpace)),
            ("64:ff9b::8.8.8.8",          Some(("8.8.8.8", Nat64)),          None,               None),
            // NAT64 local use 64:ff9b:1::/48 and the rest of 64:ff9b::/32: always refused
            ("64:ff9b:1::8.8.8.8",        None,                              Some(Reserved),     Some(Reserved)),
            ("64:ff9b:1:7f00:1::",        None,                              Some(Reserved),     Some(Reserved)),
            ("64:ff9b:0:1::808:808",      None,                              Some(Reserved),     Some(Reserved)),
            // 6to4 2002::/16, IPv4 in bits 16..48: always refused
            ("2002:7f00:1::1",            Some(("127.0.0.1", SixToFour)),    Some(Loopback),     Some(Loopback)),
            ("2002:a00:1::",              Some(("10.0.0.1", SixToFour)),     Some(Private),      Some(Private)),
            ("2002:a9fe:a9fe::1",         Some(("169.254.169.254", SixToFour)), Some(Metadata),  Some(Metadata)),
            ("2002:808:808::1",           Some(("8.8.8.8", SixToFour)),      Some(Reserved),     Some(Reserved)),
            // Teredo 2001::/32, client IPv4 bit-inverted in the last 32 bits: always refused
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", Some(("127.0.0.1", Teredo)), Some(Loopback), Some(Loopback)),
            ("2001:0:4136:e378:8000:63bf:f5ff:fffe", Some(("10.0.0.1", Teredo)),  Some(Private),  Some(Private)),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some(("192.0.2.45", Teredo)), Some(Reserved), Some(Reserved)),
            ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", Some(("8.8.8.8", Teredo)),   Some(Reserved), Some(Reserved)),
            // ISATAP interface ids: refused when the IPv4 address is
            ("2606:4700:1::5efe:127.0.0.1",   Some(("127.0.0.1", Isatap)),   Some(Loopback),     Some(Loopback)),
            ("2606:4700:1:0:200:5efe:a00:1",  Some(("10.0.0.1", Isatap)),    Some(Private),      Some(Private)),
            ("2606:4700:1:0:200:5efe:808:808", Some(("8.8.8.8", Isatap)),    None,               None),
            ("fe80::5efe:8.8.8.8",        Some(("8.8.8.8", Isatap)),         Some(LinkLocal),    Some(LinkLocal)),
            // No embedded address
            ("2606:4700::1111",           None,                              None,               None),
            ("::ffff:1:7f00:1",           None,                              Some(Reserved),     Some(Reserved)),
        ];
        for (addr, embedded, bare, allowed) in table {
            let v6: Ipv6Addr = addr.parse().unwrap();
            let expected = embedded.map(|(v4, how)| (v4.parse::<Ipv4Addr>().unwrap(), how));
            assert_eq!(embedded_ipv4(v6), expected, "{addr}: embedded");
            assert_eq!(classify(v6.into()), *bare, "{addr}: no allowlist");
            assert_eq!(
                check_ip(v6.into(), &Allowlist::default()).err(),
                *bare,
                "{addr}: no allowlist"
            );
            assert_eq!(
                check_ip(v6.into(), &allow).err(),
                *allowed,
                "{addr}: allowlisted loopback"
            );
            // A translation is never judged more leniently than its IPv4 address.
            if let Some((v4, how)) = expected
                && how.is_translation()
            {
                assert_eq!(classify(v4.into()), *bare, "{addr}: as IPv4");
            }
        }
        // An IPv6 network in the allowlist opens a tunnel form; an IPv4 one does not.
        let six_to_four = Allowlist::parse("2002::/16").unwrap();
        assert!(check_ip(ip("2002:808:808::1"), &six_to_four).is_ok());
        assert!(check_ip(ip("2002:7f00:1::1"), &allow).is_err());
        // An IPv6 allowlist entry for the mapped range matches as IPv6 too.
        let mapped = Allowlist::parse("::ffff:0:0/96").unwrap();
        assert!(check_ip(ip("::ffff:10.0.0.1"), &mapped).is_ok());
        assert!(check_ip(ip("10.0.0.1"), &mapped).is_err());
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
