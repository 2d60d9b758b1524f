//! `*_headers_to_add` / `*_headers_to_remove` at one level (route config,
//! virtual host, route, weighted cluster), with Envoy's append actions.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::proto::envoy::config::core::v3::{header_value_option::HeaderAppendAction, HeaderValueOption};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Append {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

#[derive(Debug)]
pub struct HeaderAdd {
    pub name: HeaderName,
    /// The value as configured; `%…%` operators are expanded when applied.
    pub value: String,
    pub formatted: bool,
    pub append: Append,
    pub keep_empty_value: bool,
}

#[derive(Debug, Default)]
pub struct HeaderOps {
    pub add: Vec<HeaderAdd>,
    pub remove: Vec<HeaderName>,
}

fn header_name(n: &str) -> Result<HeaderName, String> {
    if n.starts_with(':') || n.eq_ignore_ascii_case("host") {
        return Err(format!(
            "header `{n}` cannot be changed with headers_to_add/remove"
        ));
    }
    HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("`{n}` is not a valid header name"))
}

impl HeaderOps {
    pub fn compile(add: &[HeaderValueOption], remove: &[String]) -> Result<HeaderOps, String> {
        let mut ops = HeaderOps::default();
        for o in add {
            let Some(h) = &o.header else {
                return Err("a header to add needs `header`".into());
            };
            let append = match o.append {
                // The deprecated bool wins when given.
                Some(true) => Append::AppendIfExistsOrAdd,
                Some(false) => Append::OverwriteIfExistsOrAdd,
                None => match HeaderAppendAction::try_from(o.append_action) {
                    Ok(HeaderAppendAction::AddIfAbsent) => Append::AddIfAbsent,
                    Ok(HeaderAppendAction::OverwriteIfExistsOrAdd) => Append::OverwriteIfExistsOrAdd,
                    Ok(HeaderAppendAction::OverwriteIfExists) => Append::OverwriteIfExists,
                    _ => Append::AppendIfExistsOrAdd,
                },
            };
            let value = if h.value.is_empty() && !h.raw_value.is_empty() {
                String::from_utf8_lossy(&h.raw_value).into_owned()
            } else {
                h.value.clone()
            };
            ops.add.push(HeaderAdd {
                name: header_name(&h.key)?,
                formatted: value.contains('%'),
                value,
                append,
                keep_empty_value: o.keep_empty_value,
            });
        }
        for r in remove {
            ops.remove.push(header_name(r)?);
        }
        Ok(ops)
    }

    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// Removes, then adds (Envoy's order within one level). `format` expands
    /// `%…%` operators in a value.
    pub fn apply(&self, headers: &mut HeaderMap, format: &dyn Fn(&str) -> String) {
        for name in &self.remove {
            headers.remove(name);
        }
        for a in &self.add {
            let value = if a.formatted {
                format(&a.value)
            } else {
                a.value.clone()
            };
            if value.is_empty() && !a.keep_empty_value {
                continue;
            }
            let Ok(value) = HeaderValue::from_str(&value) else {
                continue;
            };
            let exists = headers.contains_key(&a.name);
            match a.append {
                Append::AppendIfExistsOrAdd => {
                    headers.append(a.name.clone(), value);
                }
                Append::AddIfAbsent if !exists => {
                    headers.insert(a.name.clone(), value);
                }
                Append::AddIfAbsent => {}
                Append::OverwriteIfExistsOrAdd => {
                    headers.insert(a.name.clone(), value);
                }
                Append::OverwriteIfExists if exists => {
                    headers.insert(a.name.clone(), value);
                }
                Append::OverwriteIfExists => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::envoy::config::core::v3::HeaderValue as PHeader;

    fn opt(key: &str, value: &str, append: Option<bool>, action: HeaderAppendAction) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(PHeader {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            }),
            append,
            append_action: action as i32,
            keep_empty_value: false,
        }
    }

    #[test]
    fn append_actions() {
        use HeaderAppendAction as A;
        type Case<'a> = (Option<bool>, A, Option<&'a str>, Vec<&'a str>);
        let cases: &[Case] = &[
            (None, A::AppendIfExistsOrAdd, Some("old"), vec!["old", "new"]),
            (None, A::AppendIfExistsOrAdd, None, vec!["new"]),
            (None, A::AddIfAbsent, Some("old"), vec!["old"]),
            (None, A::AddIfAbsent, None, vec!["new"]),
            (None, A::OverwriteIfExistsOrAdd, Some("old"), vec!["new"]),
            (None, A::OverwriteIfExists, None, vec![]),
            (None, A::OverwriteIfExists, Some("old"), vec!["new"]),
            (Some(false), A::AppendIfExistsOrAdd, Some("old"), vec!["new"]),
            (Some(true), A::OverwriteIfExists, Some("old"), vec!["old", "new"]),
        ];
        for (append, action, existing, want) in cases {
            let ops = HeaderOps::compile(&[opt("x-h", "new", *append, *action)], &[]).unwrap();
            let mut h = HeaderMap::new();
            if let Some(e) = existing {
                h.insert("x-h", HeaderValue::from_str(e).unwrap());
            }
            ops.apply(&mut h, &|s| s.to_string());
            let got: Vec<&str> = h.get_all("x-h").iter().map(|v| v.to_str().unwrap()).collect();
            assert_eq!(&got, want, "{append:?} {action:?} {existing:?}");
        }
    }

    #[test]
    fn remove_then_add_and_formatting() {
        let ops = HeaderOps::compile(
            &[opt(
                "x-code",
                "%RESPONSE_CODE%",
                None,
                HeaderAppendAction::AppendIfExistsOrAdd,
            )],
            &["x-code".to_string()],
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-code", HeaderValue::from_static("stale"));
        ops.apply(&mut h, &|s| s.replace("%RESPONSE_CODE%", "200"));
        assert_eq!(h.get_all("x-code").iter().collect::<Vec<_>>(), vec!["200"]);
        assert!(HeaderOps::compile(
            &[opt(":path", "x", None, HeaderAppendAction::AppendIfExistsOrAdd)],
            &[]
        )
        .is_err());
        assert!(HeaderOps::compile(&[], &["host".to_string()]).is_err());
    }
}
