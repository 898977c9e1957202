//! Where mail for a domain goes: a static route from the configuration
//! (smart hosts, tests), else the domain's MX records.

use std::collections::HashMap;
use std::net::SocketAddr;

/// Static routes: a domain (or `*`, every domain) to addresses tried in
/// order. They win over DNS.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    exact: HashMap<String, Vec<SocketAddr>>,
    wildcard: Option<Vec<SocketAddr>>,
}

impl Routes {
    /// Builds the table from `(domain or "*", addresses)` pairs. Domains
    /// compare case-insensitively.
    pub fn new(routes: impl IntoIterator<Item = (String, Vec<SocketAddr>)>) -> Routes {
        let mut r = Routes::default();
        for (domain, addrs) in routes {
            if domain == "*" {
                r.wildcard = Some(addrs);
            } else {
                r.exact.insert(domain.to_ascii_lowercase(), addrs);
            }
        }
        r
    }

    /// The static route for `domain` (already lower-case), if any.
    pub fn lookup(&self, domain: &str) -> Option<&[SocketAddr]> {
        self.exact
            .get(domain)
            .or(self.wildcard.as_ref())
            .map(Vec::as_slice)
    }

    /// Whether there are no routes at all.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_none()
    }
}

/// The domain of an address, lower-cased; `None` when it has none (such a
/// recipient cannot be routed).
pub fn domain_of(address: &str) -> Option<String> {
    let (_, d) = address.rsplit_once('@')?;
    (!d.is_empty()).then(|| d.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_routes_win_over_the_wildcard() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let r = Routes::new([
            ("Example.NET".to_string(), vec![a]),
            ("*".to_string(), vec![b]),
        ]);
        assert_eq!(r.lookup("example.net"), Some(&[a][..]));
        assert_eq!(r.lookup("other.org"), Some(&[b][..]));
        assert_eq!(Routes::default().lookup("x"), None);
    }

    #[test]
    fn domains() {
        assert_eq!(domain_of("a@Example.COM").as_deref(), Some("example.com"));
        assert_eq!(domain_of("a@b@c.org").as_deref(), Some("c.org"));
        assert_eq!(domain_of("postmaster"), None);
        assert_eq!(domain_of("a@"), None);
    }
}
