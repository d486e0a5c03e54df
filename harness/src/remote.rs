//! A libvirt host reached over SSH (`qemu+ssh://[user@]host[:port]/system[?keyfile=...]`):
//! its guests' networks are that host's, routable from nowhere else, so mkh reaches a guest
//! through the host, as `ssh -J` does: an SSH session to the host (the URI's user, port and
//! `keyfile`, else the SSH agent or `~/.ssh/id_*`; the host key checked against
//! `~/.ssh/known_hosts` unless the URI says `no_verify=1`, as libvirt's own ssh transport
//! does), and in it a `direct-tcpip` channel to the guest's address, pumped to one end of a
//! socket pair whose other end the guest's own SSH session runs on.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::poll::PollFlags;

use crate::error::{Error, Result, SshCause};

/// The SSH endpoint of a libvirt URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SshHost {
    pub user: String,
    pub host: String,
    pub port: u16,
    /// The URI's `keyfile`.
    pub keyfile: Option<PathBuf>,
    /// Whether the host key is checked (`no_verify=1` says not).
    pub verify: bool,
}

impl std::fmt::Display for SshHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)
    }
}

impl SshHost {
    /// The SSH endpoint of a URI whose transport is SSH (`+ssh`, `+libssh2`, `+libssh`);
    /// `None` for any other URI.
    pub fn from_uri(uri: &str) -> Option<SshHost> {
        let url = url::Url::parse(uri).ok()?;
        let (_, transport) = url.scheme().split_once('+')?;
        if !matches!(transport, "ssh" | "libssh2" | "libssh") {
            return None;
        }
        let host = url.host_str()?.trim_matches(['[', ']']).to_owned();
        let query = |key: &str| {
            url.query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        let user = match url.username() {
            "" => nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map_or_else(|| "root".to_owned(), |u| u.name),
            u => u.to_owned(),
        };
        Some(SshHost {
            user,
            host,
            port: url.port().unwrap_or(22),
            keyfile: query("keyfile").map(PathBuf::from),
            verify: query("no_verify").is_none_or(|v| v != "1"),
        })
    }

    fn fail(&self, problem: impl Into<String>, source: Option<SshCause>) -> Error {
        Error::Ssh {
            target: format!("the libvirt host {self}"),
            problem: problem.into(),
            source,
        }
    }

    /// A logged-in session to the host.
    fn session(&self, timeout: Duration) -> Result<(ssh2::Session, std::os::fd::RawFd)> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| self.fail("resolve", Some(e.into())))?
            .next()
            .ok_or_else(|| self.fail("resolve: no address", None))?;
        let tcp = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| self.fail("connect", Some(e.into())))?;
        let _ = tcp.set_nodelay(true);
        let fd = tcp.as_raw_fd();
        let mut session =
            ssh2::Session::new().map_err(|e| self.fail("new session", Some(e.into())))?;
        session.set_timeout(timeout.as_millis() as u32);
        session.set_tcp_stream(tcp);
        session
            .handshake()
            .map_err(|e| self.fail("handshake", Some(e.into())))?;
        if self.verify {
            self.check_host_key(&session)?;
        }
        self.log_in(&session)?;
        session.set_timeout(0);
        Ok((session, fd))
    }

    fn check_host_key(&self, session: &ssh2::Session) -> Result<()> {
        let (key, _) = session
            .host_key()
            .ok_or_else(|| self.fail("no host key offered", None))?;
        let file = home_dir().join(".ssh/known_hosts");
        let mut known = session
            .known_hosts()
            .map_err(|e| self.fail("known hosts", Some(e.into())))?;
        let _ = known.read_file(&file, ssh2::KnownHostFileKind::OpenSSH);
        match known.check_port(&self.host, self.port, key) {
            ssh2::CheckResult::Match => Ok(()),
            ssh2::CheckResult::Mismatch => Err(self.fail(
                format!("its host key differs from the one {} records for it: another machine may answer there; if the host was rebuilt, update that file (ssh-keygen -R)", file.display()),
                None,
            )),
            _ => Err(self.fail(
                format!("its host key is not in {} (libvirt's ssh transport refuses it too); add it after checking it (`ssh -p {} {}@{}` once), or put no_verify=1 in the URI", file.display(), self.port, self.user, self.host),
                None,
            )),
        }
    }

    fn log_in(&self, session: &ssh2::Session) -> Result<()> {
        if let Some(key) = &self.keyfile {
            return session
                .userauth_pubkey_file(&self.user, None, key, None)
                .map_err(|e| {
                    self.fail(
                        format!("key login with {} (the URI's keyfile)", key.display()),
                        Some(e.into()),
                    )
                });
        }
        if session.userauth_agent(&self.user).is_ok() {
            return Ok(());
        }
        for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            let key = home_dir().join(".ssh").join(name);
            if key.exists()
                && session
                    .userauth_pubkey_file(&self.user, None, &key, None)
                    .is_ok()
            {
                return Ok(());
            }
        }
        Err(self.fail(
            "no key logged in: neither the SSH agent nor ~/.ssh/id_{ed25519,ecdsa,rsa}; put keyfile=PATH in the URI",
            None,
        ))
    }

    /// The OpenSSH `ProxyCommand` that goes through this host as mkh does (`ssh -W`), with the
    /// URI's port and key, for plain `ssh` to a guest.
    pub fn openssh_proxy_command(&self) -> String {
        let mut words = vec!["ssh".to_owned(), "-p".into(), self.port.to_string()];
        if let Some(key) = &self.keyfile {
            words.extend(["-i".into(), key.display().to_string()]);
        }
        if !self.verify {
            words.extend(["-o".into(), "StrictHostKeyChecking=no".into()]);
        }
        words.extend([
            "-W".into(),
            "%h:%p".into(),
            format!("{}@{}", self.user, self.host),
        ]);
        crate::ssh::shell_join(&words)
    }

    /// Logs in once and out again: whether guests can be reached through this host.
    pub fn check_login(&self) -> Result<()> {
        let (session, _) = self.session(Duration::from_secs(20))?;
        let _ = session.disconnect(None, "checked", None);
        Ok(())
    }

    /// A stream to `ip:port` as the host sees it, carried through the host. The pump runs on
    /// a thread of its own until either end closes.
    pub fn tunnel(&self, ip: Ipv4Addr, port: u16, timeout: Duration) -> Result<UnixStream> {
        let (session, fd) = self.session(timeout)?;
        session.set_timeout(timeout.as_millis() as u32);
        let channel = session
            .channel_direct_tcpip(&ip.to_string(), port, None)
            .map_err(|e| {
                self.fail(
                    format!("open a channel to {ip}:{port} through it"),
                    Some(e.into()),
                )
            })?;
        session.set_timeout(0);
        let (near, far) =
            UnixStream::pair().map_err(|e| self.fail("socket pair", Some(e.into())))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_pump = stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("mkh-jump-{ip}"))
            .spawn(move || pump(session, channel, fd, far, &stop_pump))
            .map_err(|e| self.fail("start the tunnel thread", Some(e.into())))?;
        register_pump(stop, handle);
        tracing::debug!(%ip, port, "tunnel through the libvirt host");
        Ok(near)
    }
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
        })
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The running pumps, each with its stop flag. libssh2 registers an `atexit` handler that
/// tears its library state down; a pump still in a libssh2 call then crashes the process. So
/// the first pump registers a handler of its own, which runs before libssh2's (handlers run in
/// the reverse order of registration, and libssh2's was registered when the first session was
/// made): it stops every pump and waits for it.
static PUMPS: Mutex<Vec<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>> = Mutex::new(Vec::new());

fn register_pump(stop: Arc<AtomicBool>, handle: std::thread::JoinHandle<()>) {
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    AT_EXIT.call_once(|| {
        // SAFETY: `stop_pumps` is an `extern "C" fn()` that never unwinds.
        unsafe { libc::atexit(stop_pumps) };
    });
    let mut pumps = PUMPS.lock().unwrap_or_else(|p| p.into_inner());
    pumps.retain(|(_, h)| !h.is_finished());
    pumps.push((stop, handle));
}

extern "C" fn stop_pumps() {
    let pumps = std::mem::take(&mut *PUMPS.lock().unwrap_or_else(|p| p.into_inner()));
    for (stop, _) in &pumps {
        stop.store(true, Ordering::SeqCst);
    }
    for (_, handle) in pumps {
        let _ = handle.join();
    }
}

/// Copies both ways between the channel and `local` until the guest closes, the local end has
/// closed and the guest had [`CLOSE_GRACE`] to follow, `stop` is set, or either fails. Between
/// rounds it sleeps in `poll` on what it waits for: the local end when it can take or give
/// bytes, the host's socket in the direction libssh2 is blocked on.
fn pump(
    session: ssh2::Session,
    mut channel: ssh2::Channel,
    session_fd: i32,
    mut local: UnixStream,
    stop: &AtomicBool,
) {
    let _ = local.set_nonblocking(true);
    session.set_blocking(false);
    let (mut up, mut down) = (Vec::<u8>::new(), Vec::<u8>::new());
    let mut buf = vec![0u8; 64 * 1024];
    let mut local_closed: Option<std::time::Instant> = None;
    let mut eof_sent = false;
    loop {
        let mut progress = false;
        // local -> guest
        if up.is_empty() && local_closed.is_none() {
            match local.read(&mut buf) {
                Ok(0) => local_closed = Some(std::time::Instant::now()),
                Ok(n) => up.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        if !up.is_empty() {
            match channel.write(&up) {
                Ok(n) => {
                    up.drain(..n);
                    progress |= n > 0;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        if local_closed.is_some() && up.is_empty() && !eof_sent {
            eof_sent = channel.send_eof().is_ok();
        }
        // guest -> local
        if down.is_empty() {
            match channel.read(&mut buf) {
                // The guest closed: so does the local end, when `local` drops.
                Ok(0) if channel.eof() => break,
                Ok(n) => {
                    down.extend_from_slice(&buf[..n]);
                    progress |= n > 0;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        if !down.is_empty() {
            match local.write(&down) {
                Ok(n) => {
                    down.drain(..n);
                    progress |= n > 0;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // The local end is gone: nothing more to deliver.
                Err(_) => break,
            }
        }
        if local_closed.is_some_and(|t| t.elapsed() >= CLOSE_GRACE) || stop.load(Ordering::SeqCst) {
            break;
        }
        if !progress {
            let local_wants = match (up.is_empty() && local_closed.is_none(), !down.is_empty()) {
                (true, true) => PollFlags::POLLIN | PollFlags::POLLOUT,
                (true, false) => PollFlags::POLLIN,
                (false, true) => PollFlags::POLLOUT,
                (false, false) => PollFlags::empty(),
            };
            let session_wants = match session.block_directions() {
                ssh2::BlockDirections::Outbound => PollFlags::POLLOUT,
                ssh2::BlockDirections::Both => PollFlags::POLLIN | PollFlags::POLLOUT,
                // Inbound, or nothing pending: whatever the guest sends next.
                _ => PollFlags::POLLIN,
            };
            wait_for(&local, local_wants, session_fd, session_wants);
        }
    }
    let _ = channel.close();
    drop(channel);
    let _ = session.disconnect(None, "done", None);
}

/// How long the guest has to close once the local end closed.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Sleeps until the local end or the host's socket is ready as asked, 100 ms at most.
fn wait_for(local: &UnixStream, local_wants: PollFlags, session_fd: i32, session_wants: PollFlags) {
    use nix::poll::{poll, PollFd, PollTimeout};
    // SAFETY: the session owns this fd and outlives the call.
    let session = unsafe { std::os::fd::BorrowedFd::borrow_raw(session_fd) };
    let mut fds = [
        PollFd::new(local.as_fd(), local_wants),
        PollFd::new(session, session_wants),
    ];
    let _ = poll(&mut fds, PollTimeout::from(100u8));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_uris_name_their_host_and_others_none() {
        let h =
            SshHost::from_uri("qemu+ssh://root@127.0.0.1:2222/system?keyfile=/k/id&no_verify=1")
                .unwrap();
        assert_eq!(
            h,
            SshHost {
                user: "root".into(),
                host: "127.0.0.1".into(),
                port: 2222,
                keyfile: Some("/k/id".into()),
                verify: false,
            }
        );
        let plain = SshHost::from_uri("qemu+ssh://kvm-1.example/system").unwrap();
        assert_eq!((plain.port, plain.verify, plain.keyfile), (22, true, None));
        assert_eq!(
            SshHost::from_uri("qemu+libssh2://u@[::1]/system")
                .unwrap()
                .host,
            "::1"
        );
        for uri in [
            "qemu:///system",
            "qemu+tcp://h/system",
            "qemu+unix:///system",
            "test:///default",
            "not a uri",
        ] {
            assert_eq!(SshHost::from_uri(uri), None, "{uri}");
        }
    }
}
