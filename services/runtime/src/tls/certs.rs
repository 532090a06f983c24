//! A swarm CA and its members' certificates, made with rcgen: what
//! `peerctl certs init-ca` and `peerctl certs new` write, and what the tests
//! generate at run time.
//!
//! The CA is a P-256 key and a self-signed certificate named "hive swarm
//! CA"; it signs members only, which is why its key is reloaded from
//! `ca.key` with the same name rather than its certificate parsed. A
//! member's certificate names the member (its common name, shown in the
//! tracker's logs) and the hosts others dial it at (DNS names or IP
//! addresses), and may serve as both a server and a client certificate.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// The CA's common name.
const CA_NAME: &str = "hive swarm CA";
/// Files of a CA directory.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
/// Files of a member directory (beside a copy of [`CA_CERT`]).
pub const MEMBER_CERT: &str = "cert.pem";
pub const MEMBER_KEY: &str = "key.pem";
/// Hosts every member certificate names, so a swarm on one machine (and
/// `peerctl` on the member's own host) works as is.
pub const LOCAL_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// From an hour ago (clocks differ) to `days` from now.
    pub fn days(days: u64) -> Self {
        let now = SystemTime::now();
        Self {
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(days * 86_400),
        }
    }
}

/// A swarm CA: its certificate and the key that signs members.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// What a member needs: its certificate and key (PEM), and its fingerprint.
pub struct Member {
    pub cert_pem: String,
    pub key_pem: String,
    pub fingerprint: String,
}

impl Ca {
    /// A new CA, valid for 10 years.
    pub fn new() -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let params = ca_params(Validity::days(3650));
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA in `dir` ([`CA_CERT`], [`CA_KEY`]).
    pub fn load(dir: &Path) -> Result<Self, CertError> {
        let cert_pem = read(&dir.join(CA_CERT))?;
        let key = KeyPair::from_pem(&read(&dir.join(CA_KEY))?).map_err(|e| {
            CertError::Invalid(format!("{}: not a key ({e})", dir.join(CA_KEY).display()))
        })?;
        Ok(Self {
            cert_pem,
            // Only the name and key of the CA go into what it signs.
            issuer: Issuer::new(ca_params(Validity::days(1)), key),
        })
    }

    /// Writes the CA to `dir` (created), refusing to overwrite one.
    pub fn save(&self, dir: &Path) -> Result<(), CertError> {
        create_dir(dir)?;
        write_new(&dir.join(CA_KEY), &self.issuer.key().serialize_pem(), true)?;
        write_new(&dir.join(CA_CERT), &self.cert_pem, false)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate for member `name`, valid at `hosts` and the
    /// [`LOCAL_HOSTS`], signed by this CA.
    pub fn member(
        &self,
        name: &str,
        hosts: &[String],
        validity: Validity,
    ) -> Result<Member, CertError> {
        let mut names = vec![name.to_owned()];
        names.extend(hosts.iter().cloned());
        names.extend(LOCAL_HOSTS.map(String::from));
        names.sort();
        names.dedup();
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.not_before = validity.not_before.into();
        params.not_after = validity.not_after.into();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Member {
            fingerprint: super::fingerprint(cert.der()),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Member {
    /// Writes `cert.pem`, `key.pem` (owner-only) and the CA's `ca.pem` to
    /// `dir` (created); refuses to overwrite a key.
    pub fn save(&self, dir: &Path, ca: &Ca) -> Result<MemberFiles, CertError> {
        create_dir(dir)?;
        let files = MemberFiles {
            cert: dir.join(MEMBER_CERT),
            key: dir.join(MEMBER_KEY),
            ca: dir.join(CA_CERT),
        };
        write_new(&files.key, &self.key_pem, true)?;
        write_new(&files.cert, &self.cert_pem, false)?;
        std::fs::write(&files.ca, ca.cert_pem()).map_err(|e| io(&files.ca, e))?;
        Ok(files)
    }
}

/// Where a member's files are.
pub struct MemberFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl MemberFiles {
    /// The flags that use them.
    pub fn flags(&self) -> String {
        format!(
            "--tls-cert {} --tls-key {} --tls-ca {}",
            self.cert.display(),
            self.key.display(),
            self.ca.display()
        )
    }
}

fn ca_params(validity: Validity) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = validity.not_before.into();
    params.not_after = validity.not_after.into();
    params
}

fn io(path: &Path, source: std::io::Error) -> CertError {
    CertError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|e| io(path, e))
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))
}

/// Writes a new file (owner-only if `secret`); an existing one is an error.
fn write_new(path: &Path, text: &str, secret: bool) -> Result<(), CertError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| io(path, e))?;
    file.write_all(text.as_bytes()).map_err(|e| io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_ca_signs_members_after_a_reload_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new().unwrap();
        ca.save(dir.path()).unwrap();
        assert!(ca.save(dir.path()).is_err(), "an existing CA is kept");
        let reloaded = Ca::load(dir.path()).unwrap();
        assert_eq!(reloaded.cert_pem(), ca.cert_pem());
        let member = reloaded
            .member("peer1", &["peer1.example".into()], Validity::days(1))
            .unwrap();
        let files = member.save(&dir.path().join("peer1"), &reloaded).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(member.save(&dir.path().join("peer1"), &reloaded).is_err());
        assert!(files.flags().contains("--tls-cert"));
    }
}
