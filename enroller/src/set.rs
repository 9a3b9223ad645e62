//! Custodian sets. The enroller knows every custodian of its configuration (standby ones
//! too); a secret's operations go to the custodians its manifest names, which a reshare
//! may have moved away from the set new enrollments use.

use std::sync::Arc;

use mtls::Client;
use shard::CustodianId;
use wire::dkg::DkgPeer;

/// One custodian the enroller is configured with.
#[derive(Clone)]
pub struct Known {
    /// Its name.
    pub name: CustodianId,
    /// A client that presents the enroller's certificate and requires the custodian's.
    pub client: Arc<Client>,
    /// Its address, as its peers reach it.
    pub address: String,
    /// A DNS or IP name in its certificate.
    pub server_name: String,
}

/// Custodians in holder order: their clients, and their entries for the peer channel
/// (holder `i + 1` is the `i`-th).
#[derive(Clone, Default)]
pub struct Set {
    /// Name and client, in holder order.
    pub clients: Vec<(CustodianId, Arc<Client>)>,
    /// The same custodians as their peers reach them.
    pub peers: Vec<DkgPeer>,
}

impl Set {
    /// The names, in holder order.
    pub fn names(&self) -> Vec<String> {
        self.clients.iter().map(|(c, _)| c.to_string()).collect()
    }
}

/// The custodians named, in the order given; `Err` names the first one not configured.
pub fn resolve<N: AsRef<str>>(known: &[Known], names: &[N]) -> Result<Set, String> {
    let mut set = Set::default();
    for (name, holder) in names.iter().zip(1u16..) {
        let name = name.as_ref();
        let k = known
            .iter()
            .find(|k| k.name.as_str() == name)
            .ok_or_else(|| name.to_owned())?;
        set.clients.push((k.name.clone(), k.client.clone()));
        set.peers.push(DkgPeer {
            holder,
            name: name.to_owned(),
            address: k.address.clone(),
            server_name: k.server_name.clone(),
        });
    }
    Ok(set)
}

/// The configured custodians among `names`, once each (for clean-up, which reaches what
/// it can).
pub fn reachable<N: AsRef<str>>(known: &[Known], names: &[N]) -> Vec<(CustodianId, Arc<Client>)> {
    let mut out: Vec<(CustodianId, Arc<Client>)> = Vec::new();
    for name in names {
        if let Some(k) = known.iter().find(|k| k.name.as_str() == name.as_ref()) {
            if !out.iter().any(|(c, _)| c == &k.name) {
                out.push((k.name.clone(), k.client.clone()));
            }
        }
    }
    out
}
