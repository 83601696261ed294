//! Tells the service manager what the agent is doing, for a systemd
//! `Type=notify` unit: the sd_notify(3) protocol, one datagram per state
//! change to the Unix socket that `NOTIFY_SOCKET` names (a path, or an
//! abstract name after `@`). Without that variable nothing is sent.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// A state the agent reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Every listener is bound: `systemctl start` returns, and units
    /// ordered after this one start.
    Ready,
    /// A SIGHUP reload began; [`State::Ready`] follows when it ends.
    Reloading,
    /// SIGTERM or SIGINT: draining, then exiting.
    Stopping,
}

impl State {
    fn message(self) -> &'static str {
        match self {
            State::Ready => "READY=1\nSTATUS=serving",
            State::Reloading => "RELOADING=1\nSTATUS=reloading the config",
            State::Stopping => "STOPPING=1\nSTATUS=draining in-flight requests",
        }
    }
}

/// Sends `state` to the service manager, if there is one. A failure is
/// logged, never fatal: the agent serves whether or not systemd hears it.
pub(crate) fn notify(state: State) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&socket, state.message()) {
        log::warn!(
            "cannot tell the service manager {state:?} (NOTIFY_SOCKET={}): {e}",
            socket.display()
        );
    }
}

fn send(socket: &OsStr, message: &str) -> std::io::Result<()> {
    let sender = UnixDatagram::unbound()?;
    match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sender.send_to_addr(message.as_bytes(), &addr)?;
        }
        None => {
            sender.send_to(message.as_bytes(), socket)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_reaches_a_path_socket_as_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        for (state, first) in [
            (State::Ready, "READY=1"),
            (State::Reloading, "RELOADING=1"),
            (State::Stopping, "STOPPING=1"),
        ] {
            send(path.as_os_str(), state.message()).unwrap();
            let mut buf = [0u8; 256];
            let n = receiver.recv(&mut buf).unwrap();
            let got = std::str::from_utf8(&buf[..n]).unwrap();
            assert_eq!(got.lines().next(), Some(first), "{got}");
        }
    }

    #[test]
    fn an_abstract_socket_is_named_after_the_at_sign() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("secret-agent-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&addr).unwrap();
        send(OsStr::new(&format!("@{name}")), State::Ready.message()).unwrap();
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"READY=1\n"));
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        assert!(send(dir.path().join("absent").as_os_str(), "READY=1").is_err());
    }
}
