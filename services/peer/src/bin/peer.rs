//! `peer`: hive's peer daemon.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::bail;
use clap::Parser;
use hive_peer::{Config, ControlListeners, Listeners, web::WebListener};
use hive_runtime::telemetry::{Telemetry, init_logging};
use tokio::net::TcpListener;

/// hive's peer daemon: shares a directory, serves chunks, downloads files.
#[derive(Parser, Debug)]
#[command(name = "peer", version)]
struct Args {
    /// Address of the public Peer service; port 0 picks a free port. Printed
    /// on stdout as `listening on ADDR` once bound.
    #[arg(long, env = "HIVE_LISTEN", default_value = "0.0.0.0:65050")]
    listen: SocketAddr,

    /// The Unix socket of the Control service that peerctl talks to, made
    /// owner-only (0600); by default DIR/.hive/control.sock (one per --dir,
    /// so peers on one machine never collide). Printed on stdout as
    /// `control on PATH`.
    #[arg(long, env = "HIVE_CONTROL", value_name = "PATH", value_parser = parse_socket_path)]
    control: Option<PathBuf>,

    /// Also serve the Control service over TCP on this loopback address
    /// (opt-in). Every call must then carry the cookie the daemon writes to
    /// DIR/.hive/control.cookie (0600) at each start; peerctl --peer ADDR
    /// reads it. Printed on stdout as `control-tcp on ADDR`.
    #[arg(long, env = "HIVE_CONTROL_TCP", value_name = "ADDR")]
    control_tcp: Option<SocketAddr>,

    /// Serve the web UI and its HTTP/JSON API on this address (off by
    /// default; port 0 picks a free port). On a loopback address it needs no
    /// secret; on any other, every request must carry the daemon's cookie
    /// (DIR/.hive/control.cookie, written at each start): `Authorization:
    /// Bearer COOKIE`, or the login page. The UI is plain HTTP, so with
    /// --tls-* it must be on loopback (behind a TLS proxy for other hosts).
    /// Printed on stdout as `web UI listening on http://ADDR/`.
    #[arg(long, env = "HIVE_WEB", value_name = "ADDR")]
    web: Option<SocketAddr>,

    /// A host name the web UI answers to besides IP addresses and
    /// localhost (repeatable): requests naming any other host are refused,
    /// against DNS rebinding.
    #[arg(
        long = "web-allow-host",
        env = "HIVE_WEB_ALLOW_HOST",
        value_name = "NAME",
        value_delimiter = ','
    )]
    web_allow_host: Vec<String>,

    /// A TOML file of settings: each key is a long flag without its dashes
    /// (`max-uploads = 64`). Flags and HIVE_* variables override it.
    #[arg(long = "config", env = "HIVE_CONFIG", value_name = "PATH")]
    config_file: Option<PathBuf>,

    #[command(flatten)]
    telemetry: Telemetry,

    #[command(flatten)]
    config: Config,
}

fn main() -> ExitCode {
    keep_buffers();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, its causes after colons.
            eprintln!("peer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc's allocator hands large freed buffers (the HTTP/2 and gRPC receive
/// buffers, a chunk's frames) back to the kernel and gets them again, zero
/// filled, for the next chunk: about 14% of a download's CPU went to those
/// page faults. Keep them: blocks up to 4 MiB come from the heap, and the
/// heap keeps up to 64 MiB free before shrinking. (Measured: 16% less CPU
/// per GiB fetched, peak RSS 42-46 MiB.)
fn keep_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters. It runs first thing
    // in main, before any other thread exists, with valid option constants.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
    }
}

async fn run() -> anyhow::Result<()> {
    let args: Args = hive_runtime::config_file::parse();
    init_logging(args.telemetry.log_format);
    // Before any connection: the connection caps are measured against it.
    hive_runtime::grpc::raise_open_files_limit();
    // Before the first `listening on`: a stop signal from then on is graceful.
    let shutdown = hive_runtime::shutdown::signal();
    if let Some(addr) = args.control_tcp
        && !addr.ip().is_loopback()
    {
        bail!("--control-tcp {addr} must be a loopback address: the control API is local only");
    }
    // Off loopback the UI carries the control secret (cookie, session), and
    // it is plain HTTP: a swarm that asked for TLS must not leak it.
    let tls = &args.config.tls;
    if let Some(addr) = args.web
        && !addr.ip().is_loopback()
        && (tls.tls_cert.is_some() || tls.tls_key.is_some() || tls.tls_ca.is_some())
    {
        bail!(
            "--web {addr} is not a loopback address, and the web UI is plain HTTP: with \
             --tls-cert it would carry the control secret in the clear. Keep --web on loopback \
             (e.g. --web 127.0.0.1:8650) and put a TLS proxy in front of it, or reach it \
             through an SSH tunnel"
        );
    }
    let public = bind(args.listen, "--listen", "the public port other peers dial").await?;
    println!("listening on {}", public.local_addr()?);
    let (control, cookie) = bind_control(&args).await?;
    let metrics = hive_runtime::metrics::bind(args.telemetry.metrics)
        .await
        .map_err(|e| bind_error(&e.to_string(), &e, "--metrics"))?;
    let web = match args.web {
        None => None,
        Some(addr) => {
            let listener = bind(addr, "--web", "the web UI").await?;
            println!(
                "web UI listening on {}",
                hive_peer::web::url(listener.local_addr()?)
            );
            Some(WebListener {
                listener,
                secret: cookie,
                allow_hosts: args.web_allow_host.clone(),
            })
        }
    };
    let listeners = Listeners {
        public,
        control,
        metrics,
        web,
    };
    hive_peer::serve(listeners, args.config, shutdown).await?;
    Ok(())
}

/// Binds the control socket and, if asked, the TCP control port; writes a
/// fresh cookie when TCP control or a web UI off loopback needs it, and
/// returns it.
async fn bind_control(args: &Args) -> anyhow::Result<(ControlListeners, Option<String>)> {
    let dir = &args.config.dir;
    hive_peer::access::prepare_state_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}/.hive: {e}; check --dir", dir.display()))?;
    let path = args
        .control
        .clone()
        .unwrap_or_else(|| hive_peer::access::default_socket(dir));
    let socket = hive_peer::access::bind_socket(&path).await.map_err(|e| {
        let what = format!(
            "cannot listen on {}, the control socket peerctl talks to: {e}",
            path.display()
        );
        bind_error(&what, &e, "--control")
    })?;
    println!("control on {}", path.display());
    let web_off_loopback = args.web.is_some_and(|a| !a.ip().is_loopback());
    let cookie = if args.control_tcp.is_some() || web_off_loopback {
        let cookie_path = hive_peer::access::default_cookie(dir);
        let cookie = hive_peer::access::write_cookie(&cookie_path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", cookie_path.display()))?;
        Some(cookie)
    } else {
        None
    };
    let Some(addr) = args.control_tcp else {
        return Ok((ControlListeners { socket, tcp: None }, cookie));
    };
    let tcp = bind(addr, "--control-tcp", "the TCP control port").await?;
    println!("control-tcp on {}", tcp.local_addr()?);
    let control = ControlListeners {
        socket,
        tcp: cookie.clone().map(|c| (tcp, c)),
    };
    Ok((control, cookie))
}

/// `--control` is a path; an address there is the old TCP form.
fn parse_socket_path(s: &str) -> Result<PathBuf, String> {
    let tcp = s.parse::<SocketAddr>().is_ok() || s.starts_with("tcp://");
    if tcp {
        return Err(format!(
            "--control takes the control socket's path; for TCP control give \
             --control-tcp {} (calls then need the daemon's cookie)",
            s.trim_start_matches("tcp://")
        ));
    }
    Ok(PathBuf::from(s))
}

/// Binds `addr`, the port `flag` sets; a failure names the port and the flag.
async fn bind(addr: SocketAddr, flag: &str, port: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| bind_error(&format!("cannot listen on {addr}, {port}: {e}"), &e, flag))
}

/// `what` went wrong binding the port `flag` sets.
fn bind_error(what: &str, e: &std::io::Error, flag: &str) -> anyhow::Error {
    anyhow::anyhow!(hive_runtime::telemetry::bind_error("peer", what, e, flag))
}
