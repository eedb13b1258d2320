//! Who may open a connection: limits on connections in all, per address, and on connections that
//! have not yet been welcomed (said a hello with the right token), in all and per address.
//!
//! Global limits alone are first-come: one address opening idle connections could take every
//! slot and lock every honest job out. Per-address limits keep an address to its share, and
//! the limit on connections not yet welcomed bounds what peers without the token can make the
//! coordinator hold (each at most a pre-hello frame, see [`schemas::PRE_HELLO_MAX_FRAME_LEN`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use schemas::FrameBudget;

/// The limits, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    /// The most connections served at once.
    pub max_connections: usize,
    /// The most connections from one IP address at once.
    pub max_per_address: usize,
    /// The most connections at once that have not been welcomed yet.
    pub max_unwelcomed: usize,
    /// The most connections from one IP address at once that have not been welcomed yet.
    pub max_unwelcomed_per_address: usize,
    /// The most bytes of large incomplete frames all connections may hold at once.
    pub max_buffered: usize,
    /// The same, for the connections from one IP address.
    pub max_buffered_per_address: usize,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        AdmissionLimits {
            max_connections: 10_000,
            max_per_address: 1_000,
            max_unwelcomed: 512,
            max_unwelcomed_per_address: 32,
            max_buffered: 1 << 30,
            max_buffered_per_address: 256 << 20,
        }
    }
}

/// Why a connection was refused: the limit it hit, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections`.
    Connections(usize),
    /// `max_per_address`.
    PerAddress(usize),
    /// `max_unwelcomed`.
    Unwelcomed(usize),
    /// `max_unwelcomed_per_address`.
    UnwelcomedPerAddress(usize),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Connections(n) => write!(f, "at the limit of {n} connections"),
            Refusal::PerAddress(n) => write!(f, "at the limit of {n} connections from one address"),
            Refusal::Unwelcomed(n) => {
                write!(
                    f,
                    "at the limit of {n} connections not yet past their hello"
                )
            }
            Refusal::UnwelcomedPerAddress(n) => write!(
                f,
                "at the limit of {n} connections from one address not yet past their hello"
            ),
        }
    }
}

/// The counts, shared by every connection.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: AdmissionLimits,
    counts: Mutex<Counts>,
    /// What every connection's large incomplete frames share.
    buffered: Arc<FrameBudget>,
}

#[derive(Debug, Default)]
struct Counts {
    /// Open connections.
    total: usize,
    /// Open connections not yet welcomed.
    unwelcomed: usize,
    /// By address. An address without open connections is removed.
    by_address: HashMap<IpAddr, PerAddress>,
}

/// One address's counts.
#[derive(Debug)]
struct PerAddress {
    /// Open connections.
    open: usize,
    /// Open connections not yet welcomed.
    unwelcomed: usize,
    /// What its connections' large incomplete frames share.
    buffered: Arc<FrameBudget>,
}

/// One admitted connection's place; gives it back when dropped.
#[derive(Debug)]
pub(crate) struct Pass {
    admission: Arc<Admission>,
    address: IpAddr,
    /// Whether it still counts as not yet welcomed.
    unwelcomed: bool,
    /// The budgets its large frames must fit in: everyone's and its address's.
    budgets: Vec<Arc<FrameBudget>>,
}

impl Admission {
    pub(crate) fn new(limits: AdmissionLimits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            counts: Mutex::new(Counts::default()),
            buffered: FrameBudget::new(limits.max_buffered),
        })
    }

    /// Admits a new connection from `address`, or says which limit it hit.
    pub(crate) fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Pass, Refusal> {
        let limits = self.limits;
        let mut counts = self.lock();
        let (open, unwelcomed) = counts
            .by_address
            .get(&address)
            .map_or((0, 0), |a| (a.open, a.unwelcomed));
        if counts.total >= limits.max_connections {
            return Err(Refusal::Connections(limits.max_connections));
        }
        if open >= limits.max_per_address {
            return Err(Refusal::PerAddress(limits.max_per_address));
        }
        if counts.unwelcomed >= limits.max_unwelcomed {
            return Err(Refusal::Unwelcomed(limits.max_unwelcomed));
        }
        if unwelcomed >= limits.max_unwelcomed_per_address {
            return Err(Refusal::UnwelcomedPerAddress(
                limits.max_unwelcomed_per_address,
            ));
        }
        counts.total += 1;
        counts.unwelcomed += 1;
        let entry = counts
            .by_address
            .entry(address)
            .or_insert_with(|| PerAddress {
                open: 0,
                unwelcomed: 0,
                buffered: FrameBudget::new(limits.max_buffered_per_address),
            });
        entry.open += 1;
        entry.unwelcomed += 1;
        let budgets = vec![self.buffered.clone(), entry.buffered.clone()];
        Ok(Pass {
            admission: self.clone(),
            address,
            unwelcomed: true,
            budgets,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Plain counters: a panic elsewhere cannot leave them half-updated.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Pass {
    /// The budgets the connection's large incoming frames must fit in.
    pub(crate) fn budgets(&self) -> Vec<Arc<FrameBudget>> {
        self.budgets.clone()
    }

    /// The connection was welcomed: it no longer counts against the limits on connections not
    /// yet past their hello.
    pub(crate) fn welcomed(&mut self) {
        if std::mem::take(&mut self.unwelcomed) {
            let mut counts = self.admission.lock();
            counts.unwelcomed -= 1;
            if let Some(entry) = counts.by_address.get_mut(&self.address) {
                entry.unwelcomed -= 1;
            }
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.welcomed();
        let mut counts = self.admission.lock();
        counts.total -= 1;
        if let Some(entry) = counts.by_address.get_mut(&self.address) {
            entry.open -= 1;
            if entry.open == 0 {
                counts.by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn one_address_cannot_take_the_others_places() {
        let admission = Admission::new(AdmissionLimits {
            max_connections: 10,
            max_per_address: 3,
            max_unwelcomed: 5,
            max_unwelcomed_per_address: 2,
            ..AdmissionLimits::default()
        });
        let mut a: Vec<Pass> = (0..2).map(|_| admission.admit(ip(2)).unwrap()).collect();
        assert_eq!(
            admission.admit(ip(2)).unwrap_err(),
            Refusal::UnwelcomedPerAddress(2)
        );
        // Welcomed connections make room for more unwelcomed ones, up to the address's share.
        a[0].welcomed();
        a.push(admission.admit(ip(2)).unwrap());
        a[1].welcomed();
        assert_eq!(admission.admit(ip(2)).unwrap_err(), Refusal::PerAddress(3));
        // Another address is not affected.
        let b = admission.admit(ip(1)).unwrap();
        // Its connections share their address's frame budget, and everyone's, not b's.
        assert!(Arc::ptr_eq(&a[0].budgets()[1], &a[2].budgets()[1]));
        assert!(!Arc::ptr_eq(&a[0].budgets()[1], &b.budgets()[1]));
        assert!(Arc::ptr_eq(&a[0].budgets()[0], &b.budgets()[0]));
        drop(a);
        drop(b);
        assert!(admission.lock().by_address.is_empty());
        assert_eq!(admission.lock().total, 0);
        assert_eq!(admission.lock().unwelcomed, 0);
    }

    #[test]
    fn the_global_limits_hold_across_addresses() {
        let admission = Admission::new(AdmissionLimits {
            max_connections: 3,
            max_per_address: 3,
            max_unwelcomed: 2,
            max_unwelcomed_per_address: 2,
            ..AdmissionLimits::default()
        });
        let mut passes: Vec<Pass> = (1..=2).map(|i| admission.admit(ip(i)).unwrap()).collect();
        assert_eq!(admission.admit(ip(3)).unwrap_err(), Refusal::Unwelcomed(2));
        passes[0].welcomed();
        passes.push(admission.admit(ip(3)).unwrap());
        assert_eq!(admission.admit(ip(4)).unwrap_err(), Refusal::Connections(3));
    }
}
