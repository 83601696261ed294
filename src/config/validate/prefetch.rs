//! `prefetch`: names, tag keys and roles, and the bounds of each.

use std::time::Duration;

use super::Validator;
use crate::config::error::shown;
use crate::config::prefetch::{MAX_ITEMS, MAX_JITTER, PrefetchPlan};
use crate::config::raw::{RawPrefetch, RawPrefetchItem};
use crate::config::{CacheConfig, ConfigError};
use crate::domain::RoleArn;

impl Validator<'_> {
    pub(super) fn prefetch(
        &self,
        raw: Option<RawPrefetch>,
        cache: &CacheConfig,
    ) -> Result<PrefetchPlan, ConfigError> {
        let Some(raw) = raw else {
            return Ok(PrefetchPlan {
                limit: cache.max_entries,
                ..PrefetchPlan::default()
            });
        };
        let jitter = raw.jitter.map_or(Duration::ZERO, |d| d.0);
        if jitter > MAX_JITTER {
            return Err(self.invalid("prefetch.jitter", "must be at most 10m"));
        }
        let limit = raw.limit.unwrap_or(cache.max_entries);
        if limit == 0 || limit > cache.max_entries {
            return Err(self.invalid(
                "prefetch.limit",
                format!(
                    "`{limit}` must be from 1 to cache.max-entries ({})",
                    cache.max_entries
                ),
            ));
        }
        Ok(PrefetchPlan {
            secrets: self.prefetch_items("prefetch.secrets", raw.secrets, true)?,
            tags: self.prefetch_items("prefetch.tags", raw.tags, false)?,
            jitter,
            limit,
        })
    }

    fn prefetch_items(
        &self,
        path: &str,
        raw: Vec<RawPrefetchItem>,
        by_name: bool,
    ) -> Result<Vec<(String, Option<RoleArn>)>, ConfigError> {
        let (key, other) = if by_name {
            ("name", "key")
        } else {
            ("key", "name")
        };
        if raw.len() > MAX_ITEMS {
            return Err(self.invalid(path, format!("lists more than {MAX_ITEMS} entries")));
        }
        let mut items = Vec::with_capacity(raw.len());
        for (i, item) in raw.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let (given, wrong) = if by_name {
                (&item.name, &item.key)
            } else {
                (&item.key, &item.name)
            };
            if wrong.is_some() {
                return Err(
                    self.invalid(&at, format!("has `{other}`; entries here have a `{key}`"))
                );
            }
            let text = match given {
                Some(text) if !text.is_empty() && text.len() <= 2048 => text.clone(),
                _ => {
                    return Err(
                        self.invalid(&at, format!("needs a `{key}` of 1 to 2048 characters"))
                    );
                }
            };
            let role = match &item.role {
                None => None,
                Some(role) => Some(RoleArn::parse(role).ok_or_else(|| {
                    self.invalid(
                        &format!("{at}.role"),
                        format!("`{}` is not an IAM role ARN (arn:<partition>:iam::<account>:role/<name>)", shown(role)),
                    )
                })?),
            };
            items.push((text, role));
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::SAMPLE;
    use crate::config::validate::tests::check;

    #[test]
    fn names_tags_roles_and_bounds() {
        let with = |section: &str| check(&format!("{SAMPLE}prefetch:\n{section}"));
        let c = with("  secrets:\n    - name: app/db\n    - name: app/other\n      role: arn:aws:iam::123456789012:role/r\n  tags:\n    - key: team\n  jitter: 2s\n  limit: 10\n").unwrap();
        let p = &c.prefetch;
        assert_eq!(p.secrets.len(), 2);
        assert_eq!(
            p.secrets[1].1.as_ref().unwrap().as_str(),
            "arn:aws:iam::123456789012:role/r"
        );
        assert_eq!(p.tags[0], ("team".to_owned(), None));
        assert_eq!(p.jitter, std::time::Duration::from_secs(2));
        assert_eq!(p.limit, 10);
        assert_eq!(p.roles().len(), 2);
        assert!(
            c.summary()
                .contains("prefetch: 2 name(s), 1 tag key(s), 1 role(s), limit 10, jitter 2s"),
            "{}",
            c.summary()
        );
        assert_eq!(check(SAMPLE).unwrap().prefetch.limit, 1000);
        for (section, says) in [
            ("  jitter: 11m\n", "prefetch.jitter: must be at most 10m"),
            ("  limit: 0\n", "prefetch.limit"),
            (
                "  limit: 1001\n",
                "must be from 1 to cache.max-entries (1000)",
            ),
            (
                "  secrets:\n    - role: arn:aws:iam::123456789012:role/r\n",
                "prefetch.secrets[0]: needs a `name`",
            ),
            (
                "  tags:\n    - key: t\n      role: nope\n",
                "prefetch.tags[0].role: `nope` is not an IAM role ARN",
            ),
            ("  tags:\n    - kee: t\n", "kee"),
            (
                "  tags:\n    - name: t\n",
                "prefetch.tags[0]: has `name`; entries here have a `key`",
            ),
        ] {
            let err = with(section).unwrap_err().to_string();
            assert!(err.contains(says), "{section}: {err}");
        }
    }
}
