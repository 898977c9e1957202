//! What a session allows: its limits and the relay policy.

use std::net::IpAddr;

use ipnet::IpNet;

/// Settings every session of a worker shares.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Our name in the greeting, EHLO reply and `Received:` headers.
    pub hostname: String,
    /// Largest message accepted (announced with SIZE, enforced while reading).
    pub max_message_size: usize,
    /// Recipients per message; more get 452 (RFC 5321 §4.5.3.1.10).
    pub max_recipients: usize,
    /// Errors in one session before it is closed with 421.
    pub max_errors: usize,
    /// Clients that may relay. Anyone else gets 554 5.7.1 at RCPT: Verdant
    /// is never an open relay.
    pub client_networks: Vec<IpNet>,
}

impl SessionConfig {
    /// Whether a client at `peer` may relay through us. An IPv4 client seen
    /// as an IPv4-mapped IPv6 address (dual-stack listener) counts as IPv4.
    pub fn may_relay(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.client_networks.iter().any(|n| n.contains(&peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_policy() {
        let cfg = SessionConfig {
            hostname: "mx.test".into(),
            max_message_size: 1000,
            max_recipients: 10,
            max_errors: 5,
            client_networks: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        };
        for (ip, ok) in [
            ("127.0.0.1", true),
            ("127.9.9.9", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("10.0.0.1", false),
            ("::2", false),
            ("::ffff:10.0.0.1", false),
        ] {
            assert_eq!(cfg.may_relay(ip.parse().unwrap()), ok, "{ip}");
        }
    }
}
