//! Stat names as the store keeps them.
//!
//! Most names are `<prefix><suffix>`: a prefix that many stats share
//! (`cluster.<name>.`, ~30 stats per cluster) and a literal suffix
//! (`upstream_rq_total`). Kept as one `String` each, the names of 10,000
//! clusters cost ~1.2 KB per cluster; a [`Name::Split`] stores a shared
//! prefix and a `&'static str` suffix instead, so a cluster's
//! names cost one prefix allocation.
//!
//! Every name orders as the string it spells, whatever its form, so the
//! store's maps list stats in Envoy's (byte-wise) order and a name finds
//! the same entry whether it is looked up whole or in two parts.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::sync::Arc;

/// A prefix shared by the stats registered under it (`cluster.<name>.`).
/// An `Arc<String>` rather than an `Arc<str>`: a thin pointer, so a
/// [`Name`] is 24 bytes, not 32 (one more small allocation per prefix,
/// 8 bytes less in each of its ~30 map entries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefix(Arc<String>);

impl Prefix {
    pub fn new(prefix: String) -> Prefix {
        Prefix(Arc::new(prefix))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(super) fn name(&self, suffix: &'static str) -> Name {
        Name::Split(self.0.clone(), suffix)
    }
}

/// A stat's name, whole or as a shared prefix and a literal suffix.
#[derive(Clone, Debug)]
pub(super) enum Name {
    Whole(Box<str>),
    Split(Arc<String>, &'static str),
}

impl Name {
    pub(super) fn whole(name: &str) -> Name {
        Name::Whole(name.into())
    }

    /// The full name as one string (the admin's listings).
    pub(super) fn to_string_full(&self) -> String {
        let (a, b) = self.parts();
        let mut s = String::with_capacity(a.len() + b.len());
        s.push_str(a);
        s.push_str(b);
        s
    }
}

/// Anything that spells a name in (at most) two parts. The maps are keyed
/// by [`Name`] and looked up through `dyn Key`, so a lookup needs neither
/// an allocation nor a joined string.
pub(super) trait Key {
    fn parts(&self) -> (&str, &str);
}

impl Key for Name {
    fn parts(&self) -> (&str, &str) {
        match self {
            Name::Whole(s) => (s, ""),
            Name::Split(p, s) => (p, s),
        }
    }
}

/// A name being looked up: `Parts(name, "")` or `Parts(prefix, suffix)`.
pub(super) struct Parts<'a>(pub &'a str, pub &'a str);

impl Key for Parts<'_> {
    fn parts(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

/// Compares two names by the bytes they spell (what comparing the joined
/// strings would give), a slice at a time.
fn cmp_parts(a: (&str, &str), b: (&str, &str)) -> Ordering {
    let mut a_rest = [a.0.as_bytes(), a.1.as_bytes()]
        .into_iter()
        .filter(|p| !p.is_empty());
    let mut b_rest = [b.0.as_bytes(), b.1.as_bytes()]
        .into_iter()
        .filter(|p| !p.is_empty());
    let mut x: &[u8] = a_rest.next().unwrap_or_default();
    let mut y: &[u8] = b_rest.next().unwrap_or_default();
    loop {
        match (x.is_empty(), y.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            (false, false) => {}
        }
        let n = x.len().min(y.len());
        match x[..n].cmp(&y[..n]) {
            Ordering::Equal => {}
            other => return other,
        }
        x = &x[n..];
        y = &y[n..];
        if x.is_empty() {
            x = a_rest.next().unwrap_or_default();
        }
        if y.is_empty() {
            y = b_rest.next().unwrap_or_default();
        }
    }
}

impl PartialEq for dyn Key + '_ {
    fn eq(&self, other: &Self) -> bool {
        cmp_parts(self.parts(), other.parts()) == Ordering::Equal
    }
}

impl Eq for dyn Key + '_ {}

impl PartialOrd for dyn Key + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn Key + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_parts(self.parts(), other.parts())
    }
}

// `Name`'s own order must be the one `dyn Key` gives (a `Borrow` rule).
impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        cmp_parts(self.parts(), other.parts()) == Ordering::Equal
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_parts(self.parts(), other.parts())
    }
}

impl<'a> Borrow<dyn Key + 'a> for Name {
    fn borrow(&self) -> &(dyn Key + 'a) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_name_is_three_words() {
        assert_eq!(std::mem::size_of::<Name>(), 24);
    }

    #[test]
    fn cmp_parts_is_the_joined_strings_order() {
        let splits = |s: &'static str| (0..=s.len()).map(move |i| (&s[..i], &s[i..]));
        let words = [
            "",
            "a",
            "ab",
            "abc",
            "abd",
            "b",
            "cluster.a.",
            "cluster.a.x",
            "cluster.a.y",
            "cluster.ab.x",
            "cluster.a_x",
        ];
        for a in words {
            for b in words {
                let want = a.cmp(b);
                for pa in splits(a) {
                    for pb in splits(b) {
                        assert_eq!(cmp_parts(pa, pb), want, "{pa:?} vs {pb:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_map_finds_names_whole_or_split_in_string_order() {
        let p = Prefix::new("cluster.c.".into());
        let mut m: BTreeMap<Name, u32> = BTreeMap::new();
        m.insert(p.name("upstream_rq_total"), 1);
        m.insert(Name::whole("cluster.c.bind_errors"), 2);
        m.insert(p.name("upstream_cx_total"), 3);
        m.insert(Name::whole("cluster.b.x"), 4);
        for (key, want) in [
            (Parts("cluster.c.upstream_rq_total", ""), Some(1)),
            (Parts("cluster.c.", "bind_errors"), Some(2)),
            (Parts("cluster.", "c.upstream_cx_total"), Some(3)),
            (Parts("cluster.c.", "nope"), None),
        ] {
            assert_eq!(m.get(&key as &dyn Key).copied(), want, "{:?}", key.parts());
        }
        let names: Vec<String> = m.keys().map(Name::to_string_full).collect();
        assert_eq!(
            names,
            [
                "cluster.b.x",
                "cluster.c.bind_errors",
                "cluster.c.upstream_cx_total",
                "cluster.c.upstream_rq_total"
            ]
        );
    }
}
