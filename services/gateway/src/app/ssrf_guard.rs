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
    }
}
