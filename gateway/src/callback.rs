//! Checking callers' `callback_url`s against server-side request forgery.
//!
//! http/https only, no credentials in the URL, and — unless
//! `webhooks.allow_private_networks` — every address the host resolves to must
//! be public: not loopback, private, link-local (cloud metadata lives at
//! 169.254.169.254), CGNAT, unique-local, multicast or unspecified. Deliveries
//! check again at send time, since DNS can change.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use url::{Host, Url};

/// How long resolving a callback host may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Validates a callback URL; the error says why it was refused.
pub async fn check_callback_url(raw: &str, allow_private: bool) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("not a valid absolute URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("only http:// and https:// URLs are accepted".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    let host = url.host().ok_or("needs a host")?;
    if allow_private {
        return Ok(url);
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses: Vec<IpAddr> = match host {
        Host::Ipv4(ip) => vec![IpAddr::V4(ip)],
        Host::Ipv6(ip) => vec![IpAddr::V6(ip)],
        Host::Domain(domain) => {
            let lookup = tokio::net::lookup_host((domain, port));
            match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                Ok(Err(_)) | Err(_) => return Err(format!("the host `{domain}` does not resolve")),
            }
        }
    };
    if addresses.is_empty() {
        return Err("the host has no address".into());
    }
    if let Some(ip) = addresses.iter().find(|ip| !is_public(**ip)) {
        return Err(format!(
            "resolves to a non-public address ({ip}); set webhooks.allow_private_networks to allow it"
        ));
    }
    Ok(url)
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // 192.0.0/24 protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7 (incl. fd00:ec2::254 metadata)
        || (first & 0xffc0) == 0xfe80 // link local fe80::/10
        || (first == 0x2001 && ip.segments()[1] == 0xdb8) // documentation
        || ip.to_ipv4().is_some_and(|v4| !is_public_v4(v4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_private_and_odd_urls() {
        for url in [
            "ftp://example.com/x",
            "http://user:pw@example.com/",
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:192.168.1.1]/",
            "not a url",
        ] {
            assert!(check_callback_url(url, false).await.is_err(), "{url} was accepted");
        }
        assert!(check_callback_url("http://127.0.0.1:9/hook", true).await.is_ok());
        assert!(check_callback_url("https://93.184.215.14/hook", false).await.is_ok());
    }
}
