//! Who may use the Control service. By default it listens on a Unix socket
//! only its owner can open (mode 0600, in the 0700 state directory): the
//! kernel checks the caller, as docker's and transmission's sockets do.
//! TCP control is opt-in (`--control-tcp`) and every call must carry the
//! cookie: 32 random bytes, hex, written at each start to a 0600 file only
//! the daemon's user can read (bitcoind's and Tor's scheme). A call without
//! it, or with another, is UNAUTHENTICATED.
//!
//! The client half (dialing a socket, sending the cookie) is here too, for
//! peerctl and the tests.

use std::{
    fs::{OpenOptions, Permissions},
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::Interceptor,
    transport::{Channel, Endpoint},
};

use crate::scan::STATE_DIR;

/// The request metadata that carries the cookie over TCP.
pub const COOKIE_METADATA: &str = "x-hive-control-cookie";

/// The control socket of the daemon sharing `dir`: `DIR/.hive/control.sock`.
/// One per share directory, so peers on one machine never collide.
pub fn default_socket(dir: &Path) -> PathBuf {
    dir.join(STATE_DIR).join("control.sock")
}

/// The cookie of the daemon sharing `dir`: `DIR/.hive/control.cookie`.
pub fn default_cookie(dir: &Path) -> PathBuf {
    dir.join(STATE_DIR).join("control.cookie")
}

/// Creates `DIR/.hive` owner-only (0700): the socket and the cookie live
/// there, and so do part files.
pub fn prepare_state_dir(dir: &Path) -> io::Result<PathBuf> {
    let state = dir.join(STATE_DIR);
    std::fs::create_dir_all(&state)?;
    std::fs::set_permissions(&state, Permissions::from_mode(0o700))?;
    Ok(state)
}

/// Binds the control socket at `path`, owner-only (0600). A socket file
/// left by a daemon that died is replaced; one a live daemon answers on is
/// not (AddrInUse).
pub async fn bind_socket(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another daemon answers on this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Writes a fresh cookie to `path` (mode 0600, replacing any old one) and
/// returns it.
pub fn write_cookie(path: &Path) -> io::Result<String> {
    let cookie = random_hex::<32>()?;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(cookie.as_bytes())?;
    Ok(cookie)
}

/// `N` random bytes, as hex.
pub fn random_hex<const N: usize>() -> io::Result<String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads the cookie at `path`.
pub fn read_cookie(path: &Path) -> io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_owned())
}

/// The server's check of every TCP control call.
#[derive(Clone)]
pub struct CookieCheck {
    cookie: String,
}

impl CookieCheck {
    pub fn new(cookie: String) -> Self {
        Self { cookie }
    }
}

impl Interceptor for CookieCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let given = req
            .metadata()
            .get(COOKIE_METADATA)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if same(given, self.cookie.as_bytes()) {
            Ok(req)
        } else {
            Err(Status::unauthenticated(
                "TCP control needs the daemon's cookie (DIR/.hive/control.cookie): \
                 run peerctl as the daemon's user, give --cookie PATH, or use the \
                 Unix socket (--control PATH)",
            ))
        }
    }
}

/// Compares in time independent of where the two differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The client's side: adds the cookie, if there is one, to every call.
#[derive(Clone, Default)]
pub struct SendCookie(Option<MetadataValue<Ascii>>);

impl SendCookie {
    /// Sends `cookie` (hex, as the daemon wrote it).
    pub fn new(cookie: &str) -> Result<Self, String> {
        cookie
            .parse()
            .map(|v| Self(Some(v)))
            .map_err(|_| "the cookie file does not hold a cookie".to_owned())
    }
}

impl Interceptor for SendCookie {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert(COOKIE_METADATA, v.clone());
        }
        Ok(req)
    }
}

/// A channel to the Control service on the Unix socket at `path`. The URI
/// is a placeholder that gRPC needs; every connection dials the socket.
pub async fn connect_socket(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_owned();
    Endpoint::from_static("http://control.sock")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_compare_whole() {
        assert!(same(b"abcd", b"abcd"));
        assert!(!same(b"abcd", b"abce"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"abcd"));
    }

    #[test]
    fn a_cookie_is_64_hex_digits_readable_only_by_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie");
        let a = write_cookie(&path).unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read_cookie(&path).unwrap(), a);
        let b = write_cookie(&path).unwrap();
        assert_ne!(a, b, "a new cookie at each start");
    }

    #[test]
    fn a_call_without_the_cookie_is_unauthenticated() {
        let mut check = CookieCheck::new("ab".repeat(32));
        let e = check.call(Request::new(())).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let mut wrong = SendCookie::new(&"cd".repeat(32)).unwrap();
        let e = check
            .call(wrong.call(Request::new(())).unwrap())
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let mut right = SendCookie::new(&"ab".repeat(32)).unwrap();
        assert!(check.call(right.call(Request::new(())).unwrap()).is_ok());
    }
}
