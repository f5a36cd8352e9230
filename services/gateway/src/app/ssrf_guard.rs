//! The SSRF guard at write time: a webhook URL is refused when its host is, or
//! resolves to, an address Portico must never call (loopback, private, link-local,
//! metadata, ...; see [`portico_domain::network`]) unless the operator allowlisted it.
//!
//! The gateway only resolves the name, never connects to the URL. DNS can change after
//! this check, so the dispatcher checks every address again at connect time; this
//! check exists so a user learns at once, with a clear error, that a URL cannot work.

use std::net::IpAddr;
use std::time::Duration;

use portico_domain::FieldError;
use portico_domain::network::{Allowlist, check_ip};
use url::Host;

/// How long a DNS lookup may take before the URL is refused as unresolvable.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Checks every address `url`'s host stands for; `path` is the JSON pointer of the URL
/// in the request, for the error.
pub async fn check_url(
    url: &url::Url,
    allowlist: &Allowlist,
    path: &str,
) -> Result<(), FieldError> {
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses: Vec<IpAddr> = match url.host() {
        Some(Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(Host::Domain(name)) => resolve(name, port, path).await?,
        None => {
            return Err(FieldError::new("invalid_url", path, "URL must have a host"));
        }
    };
    for ip in addresses {
        if let Err(reason) = check_ip(ip, allowlist) {
            return Err(FieldError::new(
                "forbidden_address",
                path,
                format!(
                    "the URL's host {} is a {} address ({ip}), which webhooks may not reach",
                    url.host_str().unwrap_or_default(),
                    reason.as_str()
                ),
            ));
        }
    }
    Ok(())
}

async fn resolve(name: &str, port: u16, path: &str) -> Result<Vec<IpAddr>, FieldError> {
    let unresolvable = |why: &str| {
        FieldError::new(
            "unresolvable_host",
            path,
            format!("the URL's host {name} could not be resolved ({why})"),
        )
    };
    // `url` keeps the brackets off domain names; a trailing dot is a valid FQDN.
    let lookup = tokio::net::lookup_host((name, port));
    let addresses: Vec<IpAddr> = tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
        .await
        .map_err(|_| unresolvable("DNS timed out"))?
        .map_err(|_| unresolvable("no such host"))?
        .map(|a| a.ip())
        .collect();
    if addresses.is_empty() {
        return Err(unresolvable("no addresses"));
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> url::Url {
        url::Url::parse(text).unwrap()
    }

    /// IP literals in every spelling are judged by the address they denote, and the
    /// allowlist opens exactly its networks. (No DNS: names resolve only in e2e tests.)
    #[tokio::test]
    async fn ip_literals_are_checked_without_connecting() {
        let none = Allowlist::default();
        for (text, reason) in [
            ("http://127.0.0.1:9/x", "loopback"),
            ("http://[::ffff:127.0.0.1]/x", "loopback"),
            ("http://[::1]/x", "loopback"),
            ("http://0x7f.1/x", "loopback"),
            ("http://169.254.169.254/latest", "metadata"),
            ("http://10.0.0.1/", "private"),
            ("https://[fd00:ec2::254]/", "metadata"),
            // Every IPv6 spelling that carries a forbidden IPv4 address.
            ("http://[::ffff:0:127.0.0.1]/", "loopback"),
            ("http://[::ffff:0:7f00:1]/", "loopback"),
            ("http://[::127.0.0.1]/", "loopback"),
            ("http://[64:ff9b::169.254.169.254]/", "metadata"),
            ("http://[64:ff9b:1::a00:1]/", "reserved"),
            ("http://[2002:a00:1::1]/", "private"),
            ("http://[2002:808:808::1]/", "reserved"),
            ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "loopback"),
            ("http://[2001:0:4136:e378:8000:63bf:f7f7:f7f7]/", "reserved"),
            ("http://[2606:4700:1::5efe:10.0.0.1]/", "private"),
        ] {
            let err = check_url(&url(text), &none, "/url").await.unwrap_err();
            assert_eq!(err.code, "forbidden_address", "{text}");
            assert!(err.message.contains(reason), "{text}: {}", err.message);
        }
        assert!(
            check_url(&url("https://93.184.216.34/"), &none, "/url")
                .await
                .is_ok()
        );
        let loopback = Allowlist::parse("127.0.0.0/8").unwrap();
        assert!(
            check_url(&url("http://127.0.0.1:9/x"), &loopback, "/url")
                .await
                .is_ok()
        );
        assert!(
            check_url(&url("http://10.0.0.1/"), &loopback, "/url")
                .await
                .is_err()
        );
        // The allowlist opens a translation of an allowlisted IPv4 address, never a
        // tunnel through it.
        assert!(
            check_url(&url("http://[::ffff:0:127.0.0.1]/"), &loopback, "/url")
                .await
                .is_ok()
        );
        assert!(
            check_url(&url("http://[2002:7f00:1::1]/"), &loopback, "/url")
                .await
                .is_err()
        );
    }

    /// Property tests: URLs with IP literal hosts only, so nothing is resolved and
    /// nothing is ever sent anywhere.
    mod properties {
        use std::net::{Ipv4Addr, Ipv6Addr};

        use proptest::prelude::*;
        use proptest::test_runner::{Config, RngSeed};

        use super::*;

        /// Fixed seed (CI runs are repeatable) unless `PROPTEST_RNG_SEED` is set;
        /// no regression files written into the source tree.
        fn config(cases: u32) -> Config {
            let default = Config::default();
            Config {
                cases: std::env::var_os("PROPTEST_CASES").map_or(cases, |_| default.cases),
                rng_seed: match default.rng_seed {
                    RngSeed::Random => RngSeed::Fixed(0x5353_5246),
                    fixed => fixed,
                },
                failure_persistence: None,
                ..default
            }
        }

        fn runtime() -> tokio::runtime::Runtime {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
        }

        /// An IPv4 address that webhooks may never reach.
        fn forbidden_v4() -> impl Strategy<Value = Ipv4Addr> {
            prop_oneof![
                any::<[u8; 3]>().prop_map(|[b, c, d]| Ipv4Addr::new(127, b, c, d)),
                any::<[u8; 3]>().prop_map(|[b, c, d]| Ipv4Addr::new(10, b, c, d)),
                (16u8..32, any::<[u8; 2]>()).prop_map(|(b, [c, d])| Ipv4Addr::new(172, b, c, d)),
                any::<[u8; 2]>().prop_map(|[c, d]| Ipv4Addr::new(192, 168, c, d)),
                any::<[u8; 2]>().prop_map(|[c, d]| Ipv4Addr::new(169, 254, c, d)),
                (64u8..128, any::<[u8; 2]>()).prop_map(|(b, [c, d])| Ipv4Addr::new(100, b, c, d)),
                any::<[u8; 3]>().prop_map(|[b, c, d]| Ipv4Addr::new(0, b, c, d)),
                (224u8..=255, any::<[u8; 3]>())
                    .prop_map(|(a, [b, c, d])| Ipv4Addr::new(a, b, c, d)),
            ]
        }

        /// Every URL spelling of a forbidden IPv4 address: dotted, and inside each IPv6
        /// form that carries one.
        fn forbidden_host() -> impl Strategy<Value = String> {
            (forbidden_v4(), 0usize..7, any::<u64>()).prop_map(|(v4, form, prefix)| {
                let [a, b, c, d] = v4.octets();
                let (hi, lo) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
                let p = prefix.to_be_bytes().map(u16::from);
                let v6 = match form {
                    0 => return v4.to_string(),
                    1 => v4.to_ipv6_mapped(),
                    2 => Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, hi, lo),
                    3 => Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo),
                    4 => Ipv6Addr::new(0x2002, hi, lo, p[0], p[1], p[2], p[3], p[4]),
                    5 => Ipv6Addr::new(0x2001, 0, p[0], p[1], p[2], p[3], !hi, !lo),
                    _ => Ipv6Addr::new(0x2606, p[0], p[1], p[2], 0x0200, 0x5efe, hi, lo),
                };
                format!("[{v6}]")
            })
        }

        proptest! {
            #![proptest_config(config(256))]

            /// A URL whose host is a forbidden literal, in any spelling, with any port
            /// and path, is refused with forbidden_address.
            #[test]
            fn a_private_literal_is_always_refused(
                host in forbidden_host(),
                port in proptest::option::of(1u16..),
                path in "[a-zA-Z0-9/._~-]{0,40}",
            ) {
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                let text = format!("http://{host}{port}/{path}");
                let parsed = url::Url::parse(&text).expect("a valid URL");
                let err = runtime()
                    .block_on(check_url(&parsed, &Allowlist::default(), "/url"))
                    .expect_err(&text);
                prop_assert_eq!(err.code, "forbidden_address", "{}", text);
            }

            /// Any IP literal, v4 or v6, is judged without panicking, exactly as the
            /// domain rules judge the address.
            #[test]
            fn any_literal_is_judged_like_its_address(
                ip in prop_oneof![
                    any::<u32>().prop_map(|n| IpAddr::from(Ipv4Addr::from(n))),
                    any::<u128>().prop_map(|n| IpAddr::from(Ipv6Addr::from(n))),
                ],
            ) {
                let host = match ip {
                    IpAddr::V4(v4) => v4.to_string(),
                    IpAddr::V6(v6) => format!("[{v6}]"),
                };
                let parsed = url::Url::parse(&format!("https://{host}/")).expect("a valid URL");
                let verdict = runtime().block_on(check_url(&parsed, &Allowlist::default(), "/url"));
                prop_assert_eq!(
                    verdict.is_ok(),
                    check_ip(ip, &Allowlist::default()).is_ok()
                );
            }
        }
    }
}
