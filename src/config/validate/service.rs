//! `service`: the TCP listener's address, and the limits every client meets.

use std::net::SocketAddr;

use super::Validator;
use crate::config::raw::RawService;
use crate::config::{
    ConfigError, DEFAULT_MAX_CONNECTIONS, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT,
    MAX_WORKERS, OverLimit, ServiceConfig, TcpConfig, default_workers,
};

impl Validator<'_> {
    pub(super) fn service(&self, raw: RawService) -> Result<ServiceConfig, ConfigError> {
        let tcp = match raw.tcp {
            Some(tcp) => Some(TcpConfig {
                addr: self.socket_addr("service.tcp.endpoint", &tcp.endpoint)?,
                tls: tcp.tls.map(|tls| self.tls(tls)).transpose()?,
            }),
            None => None,
        };
        let uds = match raw.uds {
            Some(uds) => Some(self.uds(uds)?),
            None => None,
        };
        if tcp.is_none() && uds.is_none() {
            return Err(self.invalid(
                "service",
                "no listener is configured; add service.tcp.endpoint (e.g. 127.0.0.1:2773) or service.uds.socket-path",
            ));
        }
        let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(self.invalid("service.max-connections", "must be at least 1"));
        }
        let over_limit = match raw.over_limit.as_deref() {
            None | Some("queue") => OverLimit::Queue,
            Some("refuse") => OverLimit::Refuse,
            Some(other) => {
                return Err(self.invalid(
                    "service.over-limit",
                    format!("`{}` is not queue or refuse", other.escape_debug()),
                ));
            }
        };
        let request_timeout = raw.request_timeout.map_or(DEFAULT_REQUEST_TIMEOUT, |d| d.0);
        if request_timeout.is_zero() {
            return Err(self.invalid("service.request-timeout", "must be more than 0"));
        }
        let workers = raw.workers.unwrap_or_else(default_workers);
        if !(1..=MAX_WORKERS).contains(&workers) {
            return Err(self.invalid(
                "service.workers",
                format!("must be 1 to {MAX_WORKERS}, got {workers}"),
            ));
        }
        Ok(ServiceConfig {
            tcp,
            uds,
            workers,
            max_connections,
            over_limit,
            request_timeout,
            shutdown_timeout: raw
                .shutdown_timeout
                .map_or(DEFAULT_SHUTDOWN_TIMEOUT, |d| d.0),
        })
    }

    fn socket_addr(&self, path: &str, text: &str) -> Result<SocketAddr, ConfigError> {
        if let Ok(addr) = text.parse() {
            return Ok(addr);
        }
        // Host names (e.g. localhost:2773) resolve once, at load.
        let resolved = match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                self.inputs.resolve(text)
            }
            _ => None,
        };
        resolved.ok_or_else(|| {
            self.invalid(
                path,
                format!("`{text}` is not an address with a port, e.g. 127.0.0.1:2773"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::OverLimit;
    use crate::config::tests::SAMPLE;
    use crate::config::validate::tests::check;

    #[test]
    fn limits_and_no_listener() {
        let none = SAMPLE.replace(
            "  tcp:\n    endpoint: 0.0.0.0:3005\n",
            "  max-connections: 5\n",
        );
        assert!(
            check(&none)
                .unwrap_err()
                .to_string()
                .contains("no listener")
        );
        let limits = SAMPLE.replace(
            "    endpoint: 0.0.0.0:3005\n",
            "    endpoint: 0.0.0.0:3005\n  max-connections: 5\n  request-timeout: 2s\n",
        );
        let c = check(&limits).unwrap();
        assert_eq!(
            (c.service.max_connections, c.service.request_timeout),
            (5, Duration::from_secs(2))
        );
        assert_eq!(c.service.over_limit, OverLimit::Queue);
        assert_eq!(c.service.workers, crate::config::default_workers());
        let one = limits.replace("max-connections: 5", "max-connections: 5\n  workers: 1");
        assert_eq!(check(&one).unwrap().service.workers, 1);
        for bad in ["0", "65"] {
            let err = check(&limits.replace(
                "max-connections: 5",
                &format!("max-connections: 5\n  workers: {bad}"),
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("service.workers")
                    && err.contains(&format!("must be 1 to 64, got {bad}")),
                "{err}"
            );
        }
        let refuse = limits.replace(
            "max-connections: 5",
            "max-connections: 5\n  over-limit: refuse",
        );
        assert_eq!(
            check(&refuse).unwrap().service.over_limit,
            OverLimit::Refuse
        );
        let err = check(&limits.replace(
            "max-connections: 5",
            "max-connections: 5\n  over-limit: drop",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("service.over-limit") && err.contains("`drop` is not queue or refuse"),
            "{err}"
        );
        let zero = limits.replace("max-connections: 5", "max-connections: 0");
        assert!(
            check(&zero)
                .unwrap_err()
                .to_string()
                .contains("service.max-connections")
        );
    }

    #[test]
    fn bad_endpoint() {
        let bad = SAMPLE.replace("0.0.0.0:3005", "nowhere");
        let err = check(&bad).unwrap_err().to_string();
        assert!(
            err.contains("service.tcp.endpoint") && err.contains("nowhere"),
            "{err}"
        );
    }
}
