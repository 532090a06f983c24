//! `peerctl certs`: a swarm CA and its members' certificates
//! (hive_runtime::tls::certs), written where the --tls-* flags find them.

use hive_runtime::tls::certs::{Ca, Validity};
use serde_json::json;

use crate::{Failure, Outcome, cli::Certs};

pub fn run(certs: &Certs, json: bool) -> Outcome {
    let local = |e: hive_runtime::tls::certs::CertError| Failure::Local(e.to_string());
    match certs {
        Certs::InitCa { dir } => {
            let ca = Ca::new().map_err(local)?;
            ca.save(dir).map_err(local)?;
            if json {
                outln!("{}", json!({ "ca": dir }));
            } else {
                outln!(
                    "swarm CA written to {}; keep ca.key private. Add members with \
                     `peerctl certs new NAME --ca {}`",
                    dir.display(),
                    dir.display()
                );
            }
            Ok(())
        }
        Certs::New {
            name,
            ca,
            hosts,
            out,
            days,
        } => {
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                return Err(Failure::Local(format!(
                    "{name:?} cannot name a member: give a host-like name such as peer1"
                )));
            }
            let authority = Ca::load(ca).map_err(local)?;
            let member = authority
                .member(name, hosts, Validity::days(*days))
                .map_err(local)?;
            let dir = out.as_ref().unwrap_or(ca).join(name);
            let files = member.save(&dir, &authority).map_err(local)?;
            if json {
                outln!(
                    "{}",
                    json!({
                        "member": name,
                        "fingerprint": member.fingerprint,
                        "cert": files.cert,
                        "key": files.key,
                        "ca": files.ca,
                    })
                );
            } else {
                outln!("member {name} (sha256 {})", member.fingerprint);
                outln!("{}", files.flags());
            }
            Ok(())
        }
    }
}
