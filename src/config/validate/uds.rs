//! `service.uds`: the socket's path and permission bits.

use super::Validator;
use crate::config::raw::RawUds;
use crate::config::{ConfigError, UdsConfig};

impl Validator<'_> {
    pub(super) fn uds(&self, raw: RawUds) -> Result<UdsConfig, ConfigError> {
        let path = "service.uds.mode";
        let mode = match raw.mode {
            None => Some(0o660),
            // `mode: 0660` reads as the number 660 in YAML 1.2; both it and
            // the string "0660" mean the octal digits as written.
            Some(serde_yaml::Value::Number(n)) => parse_mode(&n.to_string()),
            Some(serde_yaml::Value::String(text)) => parse_mode(&text),
            Some(_) => None,
        }
        .ok_or_else(|| {
            self.invalid(
                path,
                "must be octal permission bits such as 0660 or \"0600\"",
            )
        })?;
        if mode & 0o600 != 0o600 {
            return Err(self.invalid(
                path,
                format!("{mode:04o} does not let the agent's own user read and write the socket"),
            ));
        }
        if raw.socket_path.as_os_str().is_empty() {
            return Err(self.invalid("service.uds.socket-path", "is empty"));
        }
        Ok(UdsConfig {
            socket_path: raw.socket_path,
            mode,
        })
    }
}

/// Octal permission bits written as digits, e.g. "0660" or "660".
pub(super) fn parse_mode(text: &str) -> Option<u32> {
    let digits = text.trim();
    if digits.is_empty() || digits.len() > 4 {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777)
}

#[cfg(test)]
mod tests {
    use crate::config::tests::SAMPLE;
    use crate::config::validate::tests::check;

    #[test]
    fn unix_socket_mode() {
        let uds = |extra: &str| {
            let yaml = SAMPLE.replace(
                "  tcp:\n    endpoint: 0.0.0.0:3005\n",
                &format!("  uds:\n    socket-path: /run/agent.sock\n{extra}"),
            );
            check(&yaml)
        };
        let c = uds("").unwrap();
        assert!(c.service.tcp.is_none());
        assert_eq!(c.service.uds.as_ref().unwrap().mode, 0o660);
        assert_eq!(
            uds("    mode: \"0600\"\n")
                .unwrap()
                .service
                .uds
                .unwrap()
                .mode,
            0o600
        );
        assert_eq!(
            uds("    mode: 0640\n").unwrap().service.uds.unwrap().mode,
            0o640
        );
        for bad in ["\"0999\"", "\"rw\"", "0400", "[1]", "77777"] {
            let err = uds(&format!("    mode: {bad}\n")).unwrap_err().to_string();
            assert!(err.contains("service.uds.mode"), "{bad}: {err}");
        }
    }
}
