//! `--check`'s summary of a [`Config`]: listeners, resources, credentials
//! and the rest, never a secret.

use super::Config;

impl Config {
    /// A short, secret-free description for `--check`.
    pub fn summary(&self) -> String {
        let mut out = format!("{}: OK\n", self.source.display());
        let mut listeners = Vec::new();
        if let Some(tcp) = &self.service.tcp {
            let scheme = match &tcp.tls {
                Some(tls) if tls.ca_file.is_some() => "https (client certificates required)",
                Some(_) => "https",
                None => "http",
            };
            listeners.push(format!("tcp {} {scheme}", tcp.addr));
        }
        if let Some(uds) = &self.service.uds {
            listeners.push(format!(
                "unix {} (mode {:04o})",
                uds.socket_path.display(),
                uds.mode
            ));
        }
        out.push_str(&format!("listeners: {}\n", listeners.join(", ")));
        out.push_str(&format!(
            "limits: max-connections {}, request-timeout {}\n",
            self.service.max_connections,
            humantime::format_duration(self.service.request_timeout)
        ));
        if self.auth.is_empty() {
            out.push_str("auth: open (no client tokens)\n");
        } else {
            let sources: Vec<String> = self.auth.iter().map(|t| t.source.to_string()).collect();
            out.push_str(&format!(
                "auth: {} token(s): {}\n",
                self.auth.len(),
                sources.join(", ")
            ));
            let headers = if self.token_headers.is_empty() {
                "none".to_owned()
            } else {
                self.token_headers.join(", ")
            };
            out.push_str(&format!(
                "token headers: Authorization: Bearer, and {headers}\n"
            ));
            for token in self.auth.iter().filter(|t| !t.roles.is_empty()) {
                out.push_str(&format!(
                    "{} may read as roles: {} (max-roles {})\n",
                    token.source,
                    token.roles.describe(),
                    self.aws.max_roles
                ));
            }
        }
        let protocol_reads = match (&self.protocol_scope, self.auth.is_empty()) {
            (_, true) => "every resource (auth is open)".to_owned(),
            (None, false) => "nothing (no auth.secret-agent-protocol)".to_owned(),
            (Some(scope), false) => scope.describe(),
        };
        out.push_str(&format!(
            "secret agent protocol: reads {protocol_reads}; convert-to-base64 {}\n",
            self.aws.convert_to_base64
        ));
        let names: Vec<&str> = self
            .aws
            .resources
            .names()
            .into_iter()
            .chain(self.aws.resources.patterns().iter().map(|p| p.label()))
            .map(|n| n.as_str())
            .collect();
        out.push_str(&format!(
            "resources ({}): {}\n",
            names.len(),
            names.join(", ")
        ));
        if let Some(account) = self.caller_account.describe() {
            out.push_str(&format!("account: {account}\n"));
        }
        out.push_str(&format!(
            "credentials: {}\n",
            self.aws.credentials.describe()
        ));
        if let Some(endpoint) = &self.aws.endpoint {
            out.push_str(&format!("secrets manager endpoint: {endpoint}\n"));
        }
        if let Some(endpoint) = &self.aws.ssm_endpoint {
            out.push_str(&format!("ssm endpoint: {endpoint}\n"));
        }
        if let Some(events) = &self.aws.events {
            out.push_str(&format!("events: SQS queue {}\n", events.queue_url));
        }
        let c = &self.cache;
        out.push_str(&format!(
            "cache: ttl {}, refresh-ahead {}, max-stale {}, max-entries {}, max-bytes {}, prefetch {}, fetch-timeout {}, min-refresh-interval {}, negative-ttl {}, stale-wait {}\n",
            humantime::format_duration(c.ttl),
            humantime::format_duration(c.refresh_ahead),
            humantime::format_duration(c.max_stale),
            c.max_entries,
            c.max_bytes,
            c.prefetch,
            humantime::format_duration(c.fetch_timeout),
            humantime::format_duration(c.min_refresh_interval),
            humantime::format_duration(c.negative_ttl),
            humantime::format_duration(c.stale_wait),
        ));
        out.push_str(&format!(
            "upstream: max-concurrent-calls {}\n",
            self.aws.max_concurrent_calls
        ));
        let p = &self.prefetch;
        if !p.is_empty() {
            out.push_str(&format!(
                "prefetch: {} name(s), {} tag key(s), {} role(s), limit {}, jitter {}\n",
                p.secrets.len(),
                p.tags.len(),
                p.roles().iter().filter(|r| r.is_some()).count(),
                p.limit,
                humantime::format_duration(p.jitter)
            ));
        }
        out.push_str(&format!(
            "log level: {}\n",
            self.log_level.as_str().to_lowercase()
        ));
        for file in &self.render {
            out.push_str(&file.describe());
            out.push('\n');
        }
        for warning in &self.warnings {
            out.push_str(&format!("warning: {warning}\n"));
        }
        out
    }
}
