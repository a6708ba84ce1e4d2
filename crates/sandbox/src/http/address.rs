//! Which resolved addresses a tool's HTTP request may connect to: a pure classification of IP
//! addresses, checked after name resolution and before every connection.
//!
//! The ranges are those of the IANA special-purpose address registries (RFC 6890 and its
//! updates) that a public HTTP server never has. An address embedding an IPv4 address (IPv4-mapped
//! IPv6, the NAT64 well-known prefix, 6to4) is classified by the IPv4 address it embeds, since
//! that is where the packets would go.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What an address is, for the network policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressClass {
    /// A public unicast address: reachable when a grant names its host.
    Public,
    /// This machine or its own networks: loopback, RFC 1918, shared CGNAT space, link-local,
    /// unique-local and site-local IPv6, benchmarking. Refused unless the sandbox allows the
    /// private network (a host-side setting, never a grant).
    Private,
    /// Never a destination: unspecified, "this network", multicast, broadcast, reserved,
    /// documentation, protocol-assignment and deprecated transition ranges.
    Unusable,
}

/// The class of `ip`.
pub(crate) fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    let private = a == 10                                // RFC 1918
        || (a == 172 && (16..=31).contains(&b))          // RFC 1918
        || (a == 192 && b == 168)                        // RFC 1918
        || a == 127                                      // loopback
        || (a == 169 && b == 254)                        // link-local
        || (a == 100 && (64..=127).contains(&b))         // shared address space (CGNAT)
        || (a == 198 && (b == 18 || b == 19)); // benchmarking
    let unusable = a == 0                                // "this network", unspecified
        || a >= 224                                      // multicast, reserved, broadcast
        || (a == 192 && b == 0 && c == 0)                // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)                // TEST-NET-1
        || (a == 198 && b == 51 && c == 100)             // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)              // TEST-NET-3
        || (a == 192 && b == 88 && c == 99); // 6to4 relay anycast (deprecated)
    if unusable {
        AddressClass::Unusable
    } else if private {
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let segments = ip.segments();
    let [s0, s1, s2, s3, s4, s5, _, _] = segments;
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4); // ::ffff:0:0/96
    }
    if ip == Ipv6Addr::LOCALHOST {
        return AddressClass::Private;
    }
    let embedded_low_v4 = || Ipv4Addr::from_bits((ip.to_bits() & 0xffff_ffff) as u32);
    if s0 == 0x64 && s1 == 0xff9b && s2 == 0 && s3 == 0 && s4 == 0 && s5 == 0 {
        return classify_v4(embedded_low_v4()); // NAT64 well-known prefix 64:ff9b::/96
    }
    if s0 == 0x2002 {
        // 6to4: 2002:AABB:CCDD::/48 routes to the IPv4 address AA.BB.CC.DD.
        let [a, b] = s1.to_be_bytes();
        let [c, d] = s2.to_be_bytes();
        return classify_v4(Ipv4Addr::new(a, b, c, d));
    }
    if s0 & 0xfe00 == 0xfc00 || s0 & 0xffc0 == 0xfe80 || s0 & 0xffc0 == 0xfec0 {
        return AddressClass::Private; // unique-local, link-local, site-local (deprecated)
    }
    // Everything else outside global unicast 2000::/3 is unspecified, IPv4-compatible
    // (deprecated), discard-only, local-use NAT64, multicast or unassigned.
    let global_unicast = s0 & 0xe000 == 0x2000;
    // 2001::/23 (IETF protocol assignments: Teredo, benchmarking, ORCHID...), 2001:db8::/32
    // and 3fff::/20 (documentation).
    let unusable_in_global =
        (s0 == 0x2001 && (s1 < 0x0200 || s1 == 0x0db8)) || (s0 == 0x3fff && s1 < 0x1000);
    if !global_unicast || unusable_in_global {
        return AddressClass::Unusable;
    }
    AddressClass::Public
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(text: &str) -> AddressClass {
        classify(
            text.parse()
                .unwrap_or_else(|_| panic!("{text} is an address")),
        )
    }

    #[test]
    fn public_addresses_are_public() {
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "2001:4860:4860::8888",
            "3ff0::1",
            "3fff:1000::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            assert_eq!(class(public), AddressClass::Public, "{public}");
        }
    }

    #[test]
    fn loopback_private_link_local_and_cgnat_are_private() {
        for private in [
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "198.18.0.1",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            // The same, written as IPv4-mapped IPv6, NAT64 or 6to4 addresses.
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:0001::1",
            "2002:c0a8:0101::1",
        ] {
            assert_eq!(class(private), AddressClass::Private, "{private}");
        }
    }

    #[test]
    fn special_purpose_addresses_are_unusable() {
        for unusable in [
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "192.88.99.1",
            "::",
            "::127.0.0.1",
            "::8.8.8.8",
            "::ffff:0.0.0.0",
            "::ffff:224.0.0.1",
            "100::1",
            "64:ff9b:1::1",
            "ff02::1",
            "ff0e::1",
            "2001::1",
            "2001:db8::1",
            "3fff::1",
            "3fff:fff::1",
            "4000::1",
            "1::1",
        ] {
            assert_eq!(class(unusable), AddressClass::Unusable, "{unusable}");
        }
    }
}
