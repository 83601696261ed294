//! `service.tcp.tls`: the PEM files, each one there and a regular file.

use super::Validator;
use crate::config::raw::RawTls;
use crate::config::{ConfigError, TlsConfig};

impl Validator<'_> {
    pub(super) fn tls(&self, raw: RawTls) -> Result<TlsConfig, ConfigError> {
        for (key, path) in [("cert-file", &raw.cert_file), ("key-file", &raw.key_file)]
            .into_iter()
            .chain(raw.ca_file.as_ref().map(|p| ("ca-file", p)))
        {
            if let Err(e) = self.inputs.metadata(path) {
                return Err(self.invalid(
                    &format!("service.tcp.tls.{key}"),
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
        }
        Ok(TlsConfig {
            cert_file: raw.cert_file,
            key_file: raw.key_file,
            ca_file: raw.ca_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::SAMPLE;
    use crate::config::validate::tests::{Table, check, validate};

    #[test]
    fn a_missing_file_is_named_by_key() {
        let tls = SAMPLE.replace(
            "    endpoint: 0.0.0.0:3005\n",
            "    endpoint: 0.0.0.0:3005\n    tls:\n      cert-file: /nonexistent/c.pem\n      key-file: /nonexistent/k.pem\n",
        );
        let err = check(&tls).unwrap_err().to_string();
        assert!(
            err.contains("service.tcp.tls.cert-file") && err.contains("/nonexistent/c.pem"),
            "{err}"
        );
    }

    #[test]
    fn every_file_is_checked() {
        let tls = SAMPLE.replace(
            "    endpoint: 0.0.0.0:3005\n",
            "    endpoint: 0.0.0.0:3005\n    tls:\n      cert-file: /t/c.pem\n      key-file: /t/k.pem\n      ca-file: /t/ca.pem\n",
        );
        let mut inputs = Table::file("/t/c.pem", "cert");
        let err = validate(&tls, &inputs).unwrap_err().to_string();
        assert!(
            err.starts_with("test.yaml: service.tcp.tls.key-file: cannot read /t/k.pem: "),
            "{err}"
        );
        inputs.files.insert("/t/k.pem", ("key", 0o600));
        let err = validate(&tls, &inputs).unwrap_err().to_string();
        assert!(
            err.starts_with("test.yaml: service.tcp.tls.ca-file: cannot read /t/ca.pem: "),
            "{err}"
        );
        inputs.files.insert("/t/ca.pem", ("ca", 0o644));
        let tls = validate(&tls, &inputs).unwrap().service.tcp.unwrap().tls;
        assert_eq!(
            tls.unwrap().ca_file.as_deref(),
            Some(std::path::Path::new("/t/ca.pem"))
        );
    }
}
