//! What each source address has put in the catalog: every name is charged
//! to the host whose session created it, with its manifest's bytes, until
//! the name is released. The per-address quotas
//! ([`super::rules::check_address_quota`]) are checked against these
//! charges, so one client cannot fill the catalog's global caps, and what
//! it took comes back once its sessions are gone and the grace passed.
//!
//! Charges are not stored: a restored name is charged to the host of one of
//! the holders it was restored with, and one restored without a holder to
//! nobody (it is released after the grace unless a holder comes back).

use super::{
    Registry,
    rules::{self, Usage, manifest_bytes},
};
use hive::FileName;

impl Registry {
    /// What `host` has put in the catalog.
    pub fn usage(&self, host: &str) -> Usage {
        self.charges.get(host).copied().unwrap_or_default()
    }

    /// Charges the file `name` (just added) to `host`.
    pub(super) fn charge(&mut self, name: &FileName, host: &str) {
        let Some(f) = self.files.get_mut(name) else {
            return;
        };
        let u = self.charges.entry(host.into()).or_default();
        u.files += 1;
        u.bytes += manifest_bytes(&f.manifest);
        f.charged = Some(host.into());
    }

    /// Takes a released file's charge off its host.
    pub(super) fn uncharge(&mut self, host: &str, bytes: u64) {
        if let Some(u) = self.charges.get_mut(host) {
            u.files = u.files.saturating_sub(1);
            u.bytes = u.bytes.saturating_sub(bytes);
            if u.files == 0 {
                self.charges.remove(host);
            }
        }
    }

    /// Charges each restored file with a holder to one holder's host.
    pub(super) fn charge_restored(&mut self) {
        let owners: Vec<(FileName, Box<str>)> = self
            .files
            .iter()
            .filter_map(|(name, f)| {
                let holder = f.holders.keys().min()?;
                let addr = &self.peers.get(holder)?.addr;
                Some((name.clone(), rules::charged_host(addr).into()))
            })
            .collect();
        for (name, host) in owners {
            self.charge(&name, &host);
        }
    }
}
