//! Stable ids for domain patterns. An address learnt from an answer is stored in the kernel with
//! the id of the pattern its name matched; each policy slot maps ids to that slot's rules. Ids
//! live as long as the agent: a reload that keeps a pattern keeps its id, so the addresses
//! learnt under it stay allowed without being rewritten, and a retired pattern keeps its id
//! (mapped to whatever still covers its names, or to nothing).

use std::collections::HashMap;

use agent_common::MAX_DOMAIN_IDS;

use crate::dns::name::DomainPattern;

#[derive(Debug, Clone, Default)]
pub struct DomainIds {
    by_pattern: HashMap<DomainPattern, u32>,
    /// Indexed by id; index 0 is "no pattern".
    patterns: Vec<Option<DomainPattern>>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "more than {} distinct domain patterns since the datapath was created: the running policy stays; `egress-agent uninstall` then a fresh start renumbers them",
    MAX_DOMAIN_IDS - 1
)]
pub struct IdsExhausted;

impl DomainIds {
    /// The id of `p`, assigning the next free one to a new pattern.
    pub fn assign(&mut self, p: &DomainPattern) -> Result<u32, IdsExhausted> {
        if let Some(&id) = self.by_pattern.get(p) {
            return Ok(id);
        }
        if self.patterns.is_empty() {
            self.patterns.push(None);
        }
        let id = self.patterns.len() as u32;
        if id >= MAX_DOMAIN_IDS {
            return Err(IdsExhausted);
        }
        self.patterns.push(Some(p.clone()));
        self.by_pattern.insert(p.clone(), id);
        Ok(id)
    }

    /// Ids as an earlier agent assigned them (read back from the pinned datapath): each keeps its
    /// pattern, and new patterns get ids above all of them.
    pub fn restore(pairs: impl IntoIterator<Item = (u32, DomainPattern)>) -> Self {
        let mut ids = DomainIds::default();
        for (id, p) in pairs {
            if id == 0 || id >= MAX_DOMAIN_IDS {
                continue;
            }
            let i = id as usize;
            if ids.patterns.len() <= i {
                ids.patterns.resize(i + 1, None);
            }
            ids.by_pattern.insert(p.clone(), id);
            ids.patterns[i] = Some(p);
        }
        ids
    }

    pub fn pattern(&self, id: u32) -> Option<&DomainPattern> {
        self.patterns.get(id as usize).and_then(Option::as_ref)
    }

    /// Every (id, pattern) assigned so far.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &DomainPattern)> {
        self.patterns.iter().enumerate().filter_map(|(i, p)| p.as_ref().map(|p| (i as u32, p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_never_reused() {
        let mut ids = DomainIds::default();
        let a: DomainPattern = "api.stripe.com".parse().expect("valid");
        let b: DomainPattern = "*.twilio.com".parse().expect("valid");
        let ia = ids.assign(&a).expect("room");
        let ib = ids.assign(&b).expect("room");
        assert_ne!(ia, 0);
        assert_ne!(ia, ib);
        assert_eq!(ids.assign(&a).expect("room"), ia);
        assert_eq!(ids.pattern(ib), Some(&b));
        assert_eq!(ids.iter().count(), 2);
    }
}
