//! Checking callers' `callback_url`s against server-side request forgery.
//!
//! http/https only, no credentials in the URL, and — unless
//! `webhooks.allow_private_networks` — every address the host resolves to must
//! be public ([`is_public`]): in no block of the IANA IPv4 and IPv6
//! Special-Purpose Address Registries (loopback, private, link-local — cloud
//! metadata lives at 169.254.169.254 —, CGNAT, unique-local, documentation,
//! multicast, …), and an IPv6 address that carries an IPv4 one (IPv4-mapped,
//! NAT64, 6to4, …) is judged by that IPv4 address. Deliveries check again at send
//! time with the same function, in the webhook client's resolver, since DNS can
//! change.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// How long resolving a callback host may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Validates a callback URL; the error says why it was refused.
pub async fn check_webhook_url(raw: &str, allow_private: bool) -> Result<Url, String> {
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

/// Whether an address is on the public internet, i.e. a webhook may be sent to it.
///
/// IPv4: not in [`NOT_PUBLIC_V4`]. IPv6: an address that carries an IPv4
/// address ([`embedded_v4`]: mapped, translated, compatible, NAT64 well-known
/// prefix, 6to4) is judged by that IPv4 address, since that is where the packets
/// end up; any other must be global unicast (`2000::/3`, the only block IANA
/// allocates for the public internet) and in none of [`NOT_PUBLIC_V6`].
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_public_v4(v4),
            None => GLOBAL_UNICAST.contains(&v6) && !NOT_PUBLIC_V6.iter().any(|(net, _)| net.contains(&v6)),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    !NOT_PUBLIC_V4.iter().any(|(net, _)| net.contains(&ip))
}

/// The IPv4 address an IPv6 address stands for, when it has one at a fixed place.
///
/// `::/128` and `::1` are not IPv4-compatible addresses (RFC 4291 §2.5.5.1):
/// they yield 0.0.0.0 and 0.0.0.1, which `0.0.0.0/8` refuses anyway.
/// `64:ff9b:1::/48` (RFC 8215) is not decoded: a network picks where in it the
/// IPv4 address goes (RFC 6052 §2.2), so it is refused whole, as is Teredo
/// (`2001::/32`, whose client address is obfuscated and whose server address
/// says nothing about the destination).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    match ip.segments() {
        // Last 32 bits: ::ffff:a.b.c.d IPv4-mapped (RFC 4291 §2.5.5.2; the socket
        // connects over IPv4), ::a.b.c.d IPv4-compatible (deprecated, §2.5.5.1),
        // ::ffff:0:a.b.c.d IPv4-translated (SIIT, RFC 2765 §2.1) and
        // 64:ff9b::a.b.c.d, the NAT64 well-known prefix /96 (RFC 6052 §2.1: the
        // translator connects to the IPv4 address, from inside the network).
        [0, 0, 0, 0, 0, 0 | 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => {
            Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
        }
        // 2002:AABB:CCDD::/48 6to4 (RFC 3056 §2): bits 16–48.
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

// Ipv6Addr::new's eight segments, and the prefix length.
#[allow(clippy::too_many_arguments, clippy::many_single_char_names)]
const fn v6(a: u16, b: u16, c: u16, d: u16, e: u16, f: u16, g: u16, h: u16, len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
}

/// Where the public internet is in IPv6 (IANA IPv6 Address Space registry:
/// global unicast; everything else is reserved, special or unallocated).
const GLOBAL_UNICAST: Ipv6Net = v6(0x2000, 0, 0, 0, 0, 0, 0, 0, 3);

/// IPv4 addresses a webhook is never sent to: every block of the IANA IPv4
/// Special-Purpose Address Registry (iana.org/assignments/iana-ipv4-special-registry,
/// content of 2025), whatever its "globally reachable" column says — none of them is where
/// a caller's webhook receiver lives — plus multicast and the limited broadcast.
/// Blocks inside larger ones (192.0.0.0/29 DS-Lite, 192.0.0.170/31 NAT64
/// discovery, …) are covered by them.
pub const NOT_PUBLIC_V4: &[(Ipv4Net, &str)] = &[
    (v4(0, 0, 0, 0, 8), "\"this network\" (RFC 791)"),
    (v4(10, 0, 0, 0, 8), "private use (RFC 1918)"),
    (v4(100, 64, 0, 0, 10), "shared address space, CGNAT (RFC 6598)"),
    (v4(127, 0, 0, 0, 8), "loopback (RFC 1122)"),
    (v4(169, 254, 0, 0, 16), "link local, cloud metadata (RFC 3927)"),
    (v4(172, 16, 0, 0, 12), "private use (RFC 1918)"),
    (v4(192, 0, 0, 0, 24), "IETF protocol assignments (RFC 6890)"),
    (v4(192, 0, 2, 0, 24), "documentation TEST-NET-1 (RFC 5737)"),
    (v4(192, 31, 196, 0, 24), "AS112-v4 (RFC 7535)"),
    (v4(192, 52, 193, 0, 24), "AMT (RFC 7450)"),
    (v4(192, 88, 99, 0, 24), "deprecated 6to4 relay anycast (RFC 7526)"),
    (v4(192, 168, 0, 0, 16), "private use (RFC 1918)"),
    (v4(192, 175, 48, 0, 24), "direct delegation AS112 service (RFC 7534)"),
    (v4(198, 18, 0, 0, 15), "benchmarking (RFC 2544)"),
    (v4(198, 51, 100, 0, 24), "documentation TEST-NET-2 (RFC 5737)"),
    (v4(203, 0, 113, 0, 24), "documentation TEST-NET-3 (RFC 5737)"),
    (v4(224, 0, 0, 0, 4), "multicast (RFC 5771)"),
    (v4(240, 0, 0, 0, 4), "reserved (RFC 1112), and 255.255.255.255 limited broadcast (RFC 919)"),
];

/// IPv6 addresses a webhook is never sent to: every block of the IANA IPv6
/// Special-Purpose Address Registry (iana.org/assignments/iana-ipv6-special-registry,
/// updated 2025-10-09) and the non-unicast scopes. Those outside `2000::/3` are refused by
/// [`GLOBAL_UNICAST`] already and listed to say why; the transition prefixes
/// that carry an IPv4 address at a fixed place are decoded first
/// ([`embedded_v4`]) and judged by it.
pub const NOT_PUBLIC_V6: &[(Ipv6Net, &str)] = &[
    (v6(0, 0, 0, 0, 0, 0, 0, 0, 128), "unspecified (RFC 4291)"),
    (v6(0, 0, 0, 0, 0, 0, 0, 1, 128), "loopback (RFC 4291)"),
    (v6(0, 0, 0, 0, 0, 0xffff, 0, 0, 96), "IPv4-mapped (RFC 4291): judged by its IPv4 address"),
    (v6(0x64, 0xff9b, 0, 0, 0, 0, 0, 0, 96), "NAT64 well-known prefix (RFC 6052): judged by its IPv4 address"),
    (v6(0x64, 0xff9b, 1, 0, 0, 0, 0, 0, 48), "local-use IPv4/IPv6 translation (RFC 8215)"),
    (v6(0x100, 0, 0, 0, 0, 0, 0, 0, 64), "discard-only (RFC 6666)"),
    (v6(0x100, 0, 0, 1, 0, 0, 0, 0, 64), "dummy IPv6 prefix (IANA registry, 2025)"),
    (
        v6(0x2001, 0, 0, 0, 0, 0, 0, 0, 23),
        "IETF protocol assignments: Teredo, benchmarking, ORCHID, AMT, AS112… (RFC 2928)",
    ),
    (v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0, 32), "documentation (RFC 3849)"),
    (v6(0x2002, 0, 0, 0, 0, 0, 0, 0, 16), "6to4 (RFC 3056): judged by its IPv4 address"),
    (v6(0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0, 48), "direct delegation AS112 service (RFC 7534)"),
    (v6(0x3fff, 0, 0, 0, 0, 0, 0, 0, 20), "documentation (RFC 9637)"),
    (v6(0x5f00, 0, 0, 0, 0, 0, 0, 0, 16), "segment routing SIDs (RFC 9602)"),
    (v6(0xfc00, 0, 0, 0, 0, 0, 0, 0, 7), "unique local, incl. fd00:ec2::254 metadata (RFC 4193)"),
    (v6(0xfe80, 0, 0, 0, 0, 0, 0, 0, 10), "link local (RFC 4291)"),
    (v6(0xfec0, 0, 0, 0, 0, 0, 0, 0, 10), "deprecated site local (RFC 3879)"),
    (v6(0xff00, 0, 0, 0, 0, 0, 0, 0, 8), "multicast (RFC 4291)"),
];

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
            assert!(check_webhook_url(url, false).await.is_err(), "{url} was accepted");
        }
        assert!(check_webhook_url("http://127.0.0.1:9/hook", true).await.is_ok());
        assert!(check_webhook_url("https://93.184.215.14/hook", false).await.is_ok());
    }

    /// The metadata address (169.254.169.254 = a9fe:a9fe) and other non-public
    /// IPv4 addresses behind every IPv6 transition prefix, and the prefixes
    /// that are refused whole.
    #[tokio::test]
    async fn refuses_ipv4_addresses_hidden_in_ipv6_transition_prefixes() {
        for url in [
            "http://[64:ff9b::a9fe:a9fe]/",       // NAT64 well-known prefix → 169.254.169.254
            "http://[64:ff9b::169.254.169.254]/", // the same, dotted
            "http://[64:ff9b::a00:1]/",           // NAT64 → 10.0.0.1
            "http://[64:ff9b::7f00:1]/",          // NAT64 → 127.0.0.1
            "http://[64:ff9b:1::a9fe:a9fe]/",     // local-use NAT64 /48: refused whole
            "http://[64:ff9b:1:abcd::808:808]/",  // … even with a public IPv4 inside
            "http://[2002:a9fe:a9fe::]/",         // 6to4 → 169.254.169.254
            "http://[2002:c0a8:101::1]/",         // 6to4 → 192.168.1.1
            "http://[2002:7f00:1:1::1]/",         // 6to4 → 127.0.0.1
            "http://[::ffff:0:a9fe:a9fe]/",       // SIIT IPv4-translated → 169.254.169.254
            "http://[::ffff:0:10.0.0.1]/",        // SIIT → 10.0.0.1
            "http://[::ffff:a9fe:a9fe]/",         // IPv4-mapped → 169.254.169.254
            "http://[::ffff:127.0.0.1]/",         // IPv4-mapped → 127.0.0.1
            "http://[::a9fe:a9fe]/",              // IPv4-compatible → 169.254.169.254
            "http://[::127.0.0.1]/",              // IPv4-compatible → 127.0.0.1
            "http://[2001::a9fe:a9fe]/",          // Teredo: refused whole
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", // Teredo (RFC 4380's example)
            "http://[2001:2::1]/",                // benchmarking
            "http://[2001:20::1]/",               // ORCHIDv2
            "http://[2001:db8::1]/",              // documentation
            "http://[3fff::1]/",                  // documentation (2024)
            "http://[100::1]/",                   // discard-only
            "http://[5f00::1]/",                  // SRv6 SIDs
            "http://[fe80::1]/",                  // link local
            "http://[fec0::1]/",                  // site local
            "http://[ff02::1]/",                  // multicast
            "http://[::]/",                       // unspecified
            "http://[4000::1]/",                  // not global unicast
        ] {
            let refused = check_webhook_url(url, false).await;
            assert!(refused.as_ref().is_err_and(|e| e.contains("non-public")), "{url}: {refused:?}");
        }
    }

    #[test]
    fn public_addresses_stay_public() {
        for ip in [
            "93.184.215.14",
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",     // Cloudflare DNS
            "2a00:1450:4001:82a::200e", // a Google front end
            "64:ff9b::808:808",         // NAT64 → 8.8.8.8
            "2002:808:808::1",          // 6to4 → 8.8.8.8
            "::ffff:8.8.8.8",           // IPv4-mapped 8.8.8.8
            "::ffff:0:8.8.8.8",         // SIIT → 8.8.8.8
            "2001:200::1",              // just past 2001::/23 (WIDE, Japan)
            "3fff:1000::1",             // just past 3fff::/20
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} was refused");
        }
    }

    /// Every block of both tables is refused from its first to its last address,
    /// and the address just past it is judged on its own.
    #[test]
    fn every_special_purpose_block_is_refused_end_to_end() {
        for (net, why) in NOT_PUBLIC_V4 {
            for ip in [net.network(), net.broadcast()] {
                assert!(!is_public(ip.into()), "{ip} ({why})");
                let mapped = ip.to_ipv6_mapped();
                assert!(!is_public(mapped.into()), "{mapped} ({why})");
                let [a, b, c, d] = ip.octets();
                let nat64 =
                    Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
                assert!(!is_public(nat64.into()), "{nat64} ({why})");
                let six_to_four =
                    Ipv6Addr::new(0x2002, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]), 0, 0, 0, 0, 1);
                assert!(!is_public(six_to_four.into()), "{six_to_four} ({why})");
            }
        }
        for (net, why) in NOT_PUBLIC_V6 {
            for ip in [net.network(), net.broadcast()] {
                // The decoded prefixes hold public addresses too: judge their non-public ends only.
                if embedded_v4(ip).is_some_and(is_public_v4) {
                    continue;
                }
                assert!(!is_public(ip.into()), "{ip} ({why})");
            }
        }
        assert!(is_public("1.0.0.0".parse().unwrap()));
        assert!(is_public("223.255.255.255".parse().unwrap()));
        assert!(!is_public("255.255.255.255".parse().unwrap()), "limited broadcast");
    }
}
