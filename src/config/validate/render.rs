//! `render`: the files kept written with secrets; each path, its source (a
//! resource, one key of it, or a template whose syntax is checked and whose
//! `secret("...")` names must be configured), its mode and its `on-change`.

use std::path::{Component, PathBuf};

use super::Validator;
use super::uds::parse_mode;
use crate::config::error::{closest, shown};
use crate::config::raw::RawRender;
use crate::config::{
    ConfigError, DEFAULT_ON_CHANGE_TIMEOUT, DEFAULT_RENDER_MODE, RenderFile, RenderSource,
};
use crate::domain::ResourceName;
use crate::render::template;
use crate::resources::Resources;

impl Validator<'_> {
    pub(super) fn render(
        &self,
        raw: Option<Vec<RawRender>>,
        resources: &Resources,
    ) -> Result<Vec<RenderFile>, ConfigError> {
        let mut files: Vec<RenderFile> = Vec::new();
        for (i, entry) in raw.unwrap_or_default().into_iter().enumerate() {
            let file = self.render_file(&format!("render[{i}]"), entry, resources)?;
            if let Some(same) = files.iter().position(|f| f.path == file.path) {
                return Err(self.invalid(
                    &format!("render[{i}].path"),
                    format!(
                        "{} is already rendered by render[{same}]",
                        file.path.display()
                    ),
                ));
            }
            files.push(file);
        }
        Ok(files)
    }

    fn render_file(
        &self,
        at: &str,
        raw: RawRender,
        resources: &Resources,
    ) -> Result<RenderFile, ConfigError> {
        let path = self.render_path(&format!("{at}.path"), raw.path)?;
        let source = match (raw.resource, raw.template, raw.key) {
            (Some(name), None, key) => {
                let name = self.rendered_name(&format!("{at}.resource"), &name, resources)?;
                if let Some(key) = &key
                    && key.is_empty()
                {
                    return Err(self.invalid(&format!("{at}.key"), "is empty"));
                }
                RenderSource::Resource { name, key }
            }
            (None, Some(_), Some(_)) => {
                return Err(self.invalid(
                    &format!("{at}.key"),
                    "goes with `resource`; in a template write secret(\"<name>\").<key>",
                ));
            }
            (None, Some(text), None) => {
                let found = template::check(&text)
                    .map_err(|e| self.invalid(&format!("{at}.template"), e))?;
                let mut names = Vec::with_capacity(found.len());
                for name in found {
                    names.push(self.rendered_name(&format!("{at}.template"), &name, resources)?);
                }
                RenderSource::Template { text, names }
            }
            (Some(_), Some(_), _) => {
                return Err(self.invalid(at, "give exactly one of resource and template, not both"));
            }
            (None, None, _) => {
                return Err(self.invalid(at, "give exactly one of resource and template"));
            }
        };
        let mode = self.render_mode(&format!("{at}.mode"), raw.mode)?;
        let on_change = match raw.on_change {
            None => None,
            Some(argv) => Some(self.on_change(&format!("{at}.on-change"), argv)?),
        };
        let on_change_timeout = raw
            .on_change_timeout
            .map_or(DEFAULT_ON_CHANGE_TIMEOUT, |d| d.0);
        if on_change_timeout.is_zero() {
            return Err(self.invalid(&format!("{at}.on-change-timeout"), "must be more than 0"));
        }
        Ok(RenderFile {
            path,
            source,
            mode,
            on_change,
            on_change_timeout,
        })
    }

    /// An absolute path to a file: no `..`, not a directory's.
    fn render_path(&self, at: &str, path: PathBuf) -> Result<PathBuf, ConfigError> {
        let shown_path = shown(&path.to_string_lossy());
        if !path.is_absolute() {
            return Err(self.invalid(at, format!("`{shown_path}` is not an absolute path")));
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(self.invalid(at, format!("`{shown_path}` has a `..` in it")));
        }
        if path.as_os_str().as_encoded_bytes().ends_with(b"/") || path.file_name().is_none() {
            return Err(self.invalid(at, format!("`{shown_path}` names a directory, not a file")));
        }
        Ok(path)
    }

    /// A configured name, or a name under a pattern.
    fn rendered_name(
        &self,
        at: &str,
        name: &str,
        resources: &Resources,
    ) -> Result<ResourceName, ConfigError> {
        if let Some(found) = resources.lookup(name) {
            return Ok(found.name.into_owned());
        }
        let known: Vec<&str> = resources.names().into_iter().map(|n| n.as_str()).collect();
        let hint = closest(name, &known)
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        Err(self.invalid(
            at,
            format!(
                "`{}` is not a configured resource nor under a pattern{hint}",
                shown(name)
            ),
        ))
    }

    fn render_mode(&self, at: &str, raw: Option<serde_yaml::Value>) -> Result<u32, ConfigError> {
        let mode = match raw {
            None => Some(DEFAULT_RENDER_MODE),
            Some(serde_yaml::Value::Number(n)) => parse_mode(&n.to_string()),
            Some(serde_yaml::Value::String(text)) => parse_mode(&text),
            Some(_) => None,
        }
        .ok_or_else(|| {
            self.invalid(
                at,
                "must be octal permission bits such as \"0600\" or \"0640\"",
            )
        })?;
        if mode & 0o007 != 0 {
            return Err(self.invalid(
                at,
                format!(
                    "{mode:04o} gives others access; a rendered file holds secrets: use e.g. 0600, or 0640 for a group"
                ),
            ));
        }
        if mode & 0o600 != 0o600 {
            return Err(self.invalid(
                at,
                format!("{mode:04o} does not let the agent's own user read and write the file"),
            ));
        }
        Ok(mode)
    }

    fn on_change(&self, at: &str, argv: Vec<String>) -> Result<Vec<String>, ConfigError> {
        let Some(program) = argv.first() else {
            return Err(self.invalid(at, "is empty; give the program and its arguments"));
        };
        if !program.starts_with('/') {
            return Err(self.invalid(
                at,
                format!(
                    "`{}` is not an absolute path; the command runs without a shell or PATH lookup",
                    shown(program)
                ),
            ));
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err(self.invalid(at, "an argument holds a NUL byte"));
        }
        Ok(argv)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::SAMPLE;
    use crate::config::validate::tests::check;
    use crate::config::{ConfigError, RenderSource};

    fn with(render: &str) -> Result<crate::config::Config, ConfigError> {
        let yaml = SAMPLE.replace(
            "    resources:\n",
            "    resources:\n      prod/*: arn:aws:secretsmanager:us-west-1:999999999999:secret:prod/*\n",
        );
        check(&format!("{yaml}render:\n{render}"))
    }

    fn error(render: &str) -> String {
        with(render).unwrap_err().to_string()
    }

    #[test]
    fn the_contract_example_loads() {
        let c = with(
            r#"  - path: /run/secret-agent/db-password
    resource: TestingSecret
    key: password
    mode: "0600"
    on-change: ["/usr/bin/systemctl", "reload", "nginx"]
  - path: /etc/app/db.env
    template: |
      DB_USER={{ secret("TestingSecret").username }}
      DB_PASSWORD={{ secret("TestingSecret").password }}
  - path: /etc/app/key
    resource: prod/api-key
    mode: 0640
    on-change: ["/bin/true"]
    on-change-timeout: 5s
"#,
        )
        .unwrap();
        assert_eq!(c.render.len(), 3);
        let lines: Vec<String> = c.render.iter().map(|f| f.describe()).collect();
        assert_eq!(
            lines,
            [
                "render: /run/secret-agent/db-password from key password of resource TestingSecret, mode 0600, on-change /usr/bin/systemctl (timeout 30s)",
                "render: /etc/app/db.env from a template of TestingSecret, mode 0600",
                "render: /etc/app/key from resource prod/api-key, mode 0640, on-change /bin/true (timeout 5s)",
            ]
        );
        assert!(matches!(
            &c.render[1].source,
            RenderSource::Template { names, .. } if names.len() == 1
        ));
        assert!(
            c.summary()
                .contains("render: /etc/app/db.env from a template")
        );
        // No render section: nothing rendered.
        assert!(check(SAMPLE).unwrap().render.is_empty());
    }

    #[test]
    fn bad_entries_are_refused_with_their_key_path() {
        let cases = [
            (
                "  - path: relative/file\n    resource: TestingSecret\n",
                "render[0].path: `relative/file` is not an absolute path",
            ),
            (
                "  - path: /etc/app/\n    resource: TestingSecret\n",
                "names a directory",
            ),
            (
                "  - path: /etc/../x\n    resource: TestingSecret\n",
                "has a `..`",
            ),
            (
                "  - path: /x\n",
                "render[0]: give exactly one of resource and template",
            ),
            (
                "  - path: /x\n    resource: TestingSecret\n    template: a\n",
                "not both",
            ),
            (
                "  - path: /x\n    template: a\n    key: k\n",
                "render[0].key: goes with `resource`",
            ),
            (
                "  - path: /x\n    resource: TestingSecrt\n",
                "render[0].resource: `TestingSecrt` is not a configured resource nor under a pattern (did you mean `TestingSecret`?)",
            ),
            (
                "  - path: /x\n    template: \"{{ secret('Nope').a }}\"\n",
                "render[0].template: `Nope` is not a configured resource",
            ),
            (
                "  - path: /x\n    template: \"a\\n{{ secret('TestingSecret') \"\n",
                "render[0].template: syntax error",
            ),
            (
                "  - path: /x\n    resource: TestingSecret\n    mode: \"0644\"\n",
                "render[0].mode: 0644 gives others access",
            ),
            (
                "  - path: /x\n    resource: TestingSecret\n    mode: \"0400\"\n",
                "does not let the agent's own user",
            ),
            (
                "  - path: /x\n    resource: TestingSecret\n    mode: rw\n",
                "render[0].mode: must be octal",
            ),
            (
                "  - path: /x\n    resource: TestingSecret\n    on-change: []\n",
                "render[0].on-change: is empty",
            ),
            (
                "  - path: /x\n    resource: TestingSecret\n    on-change: [systemctl, reload]\n",
                "`systemctl` is not an absolute path",
            ),
            (
                "  - path: /x\n    resource: TestingSecret\n    on-change: [/bin/true]\n    on-change-timeout: 0s\n",
                "render[0].on-change-timeout: must be more than 0",
            ),
            (
                "  - path: /x\n    resource: TestingSecret\n  - path: /x\n    resource: TestingSecret\n",
                "render[1].path: /x is already rendered by render[0]",
            ),
        ];
        for (render, expected) in cases {
            let err = error(render);
            assert!(err.contains(expected), "{render}\n=> {err}");
            assert!(err.starts_with("test.yaml"), "{err}");
        }
    }

    #[test]
    fn unknown_keys_get_a_suggestion() {
        let err = error("  - path: /x\n    resource: TestingSecret\n    on_change: [/bin/true]\n");
        assert!(err.contains("on-change"), "{err}");
        let err = error("  - path: /x\n    resurce: TestingSecret\n");
        assert!(err.contains("resource"), "{err}");
    }
}
