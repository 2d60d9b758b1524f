//! What a client subscribed to for one type on one stream: a wildcard, a set
//! of names, or both (`*` plus names).

use std::collections::BTreeSet;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    pub wildcard: bool,
    pub names: BTreeSet<String>,
    /// Whether the client ever named a resource: after that an empty SotW
    /// list means "nothing", no longer the legacy wildcard.
    ever_named: bool,
}

impl Subscription {
    /// SotW: the request's list replaces the subscription. `full_state`
    /// types (LDS/CDS) read a never-named empty list as the legacy wildcard.
    /// Returns whether the subscription changed.
    pub fn update_sotw(&mut self, names: &[String], full_state: bool) -> bool {
        let (was_wildcard, was_names) = (self.wildcard, std::mem::take(&mut self.names));
        if names.is_empty() {
            self.wildcard = full_state && !self.ever_named;
        } else {
            self.ever_named = true;
            self.wildcard = names.iter().any(|n| n == "*");
            self.names = names.iter().filter(|n| *n != "*").cloned().collect();
        }
        was_wildcard != self.wildcard || was_names != self.names
    }

    /// Delta: adds names (`*`: the wildcard).
    pub fn subscribe<'a>(&mut self, names: impl IntoIterator<Item = &'a String>) {
        for n in names {
            if n == "*" {
                self.wildcard = true;
            } else {
                self.names.insert(n.clone());
            }
        }
    }

    /// Delta: removes names (`*`: the wildcard).
    pub fn unsubscribe<'a>(&mut self, names: impl IntoIterator<Item = &'a String>) {
        for n in names {
            if n == "*" {
                self.wildcard = false;
            } else {
                self.names.remove(n);
            }
        }
    }

    /// For `/clients`: the names, with `*` first for a wildcard.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(self.names.len() + 1);
        if self.wildcard {
            out.push("*".into());
        }
        out.extend(self.names.iter().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sotw_wildcard_rules() {
        // (full_state, successive requests) → wildcard after each
        type Case<'a> = (bool, &'a [&'a [&'a str]], &'a [bool]);
        let cases: &[Case] = &[
            (true, &[&[], &[]], &[true, true]),
            (true, &[&["a"], &[]], &[false, false]),
            (true, &[&["*", "a"], &["a"]], &[true, false]),
            (false, &[&[]], &[false]),
            (false, &[&["*"]], &[true]),
        ];
        for (full, reqs, want) in cases {
            let mut s = Subscription::default();
            for (r, w) in reqs.iter().zip(want.iter()) {
                s.update_sotw(&v(r), *full);
                assert_eq!(s.wildcard, *w, "{full} {reqs:?}");
            }
        }
        let mut s = Subscription::default();
        assert!(s.update_sotw(&v(&["a"]), true));
        assert!(!s.update_sotw(&v(&["a"]), true));
        assert!(s.update_sotw(&v(&["a", "b"]), true));
        assert_eq!(s.describe(), v(&["a", "b"]));
    }
}
