//! Connection admission: the server-wide connection limit and the limit per
//! client address.
//!
//! This is the one structure the workers share. It is touched once when a
//! connection opens and once when it closes, never per command or message;
//! the per-address counts are sharded so that workers admitting different
//! clients do not contend.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;

/// Counts open connections, in total and per client address.
#[derive(Debug)]
pub struct ConnLimiter {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    hasher: RandomState,
    per_ip: [Mutex<HashMap<IpAddr, usize>>; SHARDS],
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The server is at its connection limit.
    Total,
    /// This client address is at its limit.
    PerIp,
}

/// An admitted connection; dropping it releases its slot.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
}

impl ConnLimiter {
    /// A limiter allowing `max_total` connections, `max_per_ip` from one address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnLimiter {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            hasher: RandomState::new(),
            per_ip: Default::default(),
        })
    }

    /// Admits a connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refused> {
        if self.total.fetch_add(1, Ordering::Relaxed) >= self.max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::Total);
        }
        let mut shard = self.shard(ip).lock().unwrap_or_else(|p| p.into_inner());
        let n = shard.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            drop(shard);
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::PerIp);
        }
        *n += 1;
        Ok(Permit {
            limiter: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    fn shard(&self, ip: IpAddr) -> &Mutex<HashMap<IpAddr, usize>> {
        &self.per_ip[self.hasher.hash_one(ip) as usize % SHARDS]
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut shard = self
            .limiter
            .shard(self.ip)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = shard.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                shard.remove(&self.ip);
            }
        }
        drop(shard);
        self.limiter.total.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_release() {
        let l = ConnLimiter::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let p1 = l.admit(a).unwrap();
        let _p2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).unwrap_err(), Refused::PerIp);
        let _p3 = l.admit(b).unwrap();
        assert_eq!(l.admit(b).unwrap_err(), Refused::Total);
        assert_eq!(l.open(), 3);
        drop(p1);
        assert_eq!(l.open(), 2);
        let _p4 = l.admit(a).unwrap();
    }
}
