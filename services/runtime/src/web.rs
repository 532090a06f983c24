//! What the daemons' web pages share: the Host check against DNS rebinding
//! and presentation.

use http::{HeaderMap, header};

/// Checks a request's `Host` header against DNS rebinding: it must be an IP
/// address, `localhost` (or a name under `.localhost`), or one of `allowed`
/// (lower case, as given with `--web-allow-host`). A page on another site
/// whose name was made to resolve to this address sends its own name and is
/// refused. `daemon` names the daemon in the refusal (`peer`, `tracker`).
pub fn host_ok(headers: &HeaderMap, allowed: &[String], daemon: &str) -> Result<(), String> {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return Err("a request without a Host header".into());
    };
    let name = host_name(host).to_ascii_lowercase();
    let ok = name.parse::<std::net::IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || allowed.contains(&name);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Host {host:?} is not this {daemon}'s address; open the page by IP address, or start \
             the {daemon} with --web-allow-host {name}"
        ))
    }
}

/// `names` as [`host_ok`] compares them: lower case.
pub fn allowed_hosts(names: Vec<String>) -> Vec<String> {
    names.into_iter().map(|h| h.to_ascii_lowercase()).collect()
}

/// `host` without its port: `[::1]:80` is `::1`, `a.example:80` is
/// `a.example`.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// `n` bytes for a person: `512 B`, `1.5 KiB`, `3.0 MiB` (powers of 1024,
/// one decimal above bytes).
pub fn byte_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn host(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn only_addresses_localhost_and_allowed_names_are_hosts() {
        let allowed = allowed_hosts(vec!["Peer.Example".into()]);
        for ok in [
            "127.0.0.1:8080",
            "[::1]:8080",
            "localhost:8080",
            "ui.localhost",
            "PEER.example",
            "10.1.2.3",
        ] {
            assert!(host_ok(&host(ok), &allowed, "peer").is_ok(), "{ok}");
        }
        for bad in ["attacker.example:8080", "127.0.0.1.nip.io", ""] {
            let why = host_ok(&host(bad), &allowed, "tracker").unwrap_err();
            assert!(why.contains("--web-allow-host"), "{why}");
        }
        assert!(host_ok(&HeaderMap::new(), &allowed, "peer").is_err());
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(byte_size(0), "0 B");
        assert_eq!(byte_size(1023), "1023 B");
        assert_eq!(byte_size(1024), "1.0 KiB");
        assert_eq!(byte_size(1536), "1.5 KiB");
        assert_eq!(byte_size(3 << 20), "3.0 MiB");
        assert_eq!(byte_size(5 << 40), "5.0 TiB");
        assert_eq!(byte_size(u64::MAX), "16777216.0 TiB");
    }
}
