//! The Debian package as an operator gets it: `dpkg -i` of the .deb that
//! `cargo xtask package` built (`cargo xtask test` builds it and passes its
//! path in SIP_LB_DEB), the files where Debian wants them, the service user,
//! the unit accepted by `systemd-analyze verify`, and the installed binary
//! serving with the packaged config as that user with the unit's
//! capabilities only (systemd is not PID 1 here: `setpriv` does what the
//! unit's User= and AmbientCapabilities= would), then attaching XDP to a veth
//! and forwarding what crosses it. Purged at the end.
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use sip_lb_tests::control::Control;
use sip_lb_tests::netns::{run, NetNs, Veth};
use sip_lb_tests::process::{scratch_dir, ChildGuard};
use sip_lb_tests::sink::{next_at, Sink};
use sip_lb_tests::sip::headers;

const UNIT: &str = "/usr/lib/systemd/system/sip-lb.service";
const CONFIG: &str = "/etc/sip-lb/sip-lb.toml";
/// The unit's capabilities, as setpriv names them, and as a CapEff mask:
/// CAP_NET_ADMIN (12), CAP_NET_RAW (13), CAP_PERFMON (38), CAP_BPF (39).
const CAPS: &str = "+net_admin,+net_raw,+perfmon,+bpf";
const CAP_MASK: u64 = (1 << 12) | (1 << 13) | (1 << 38) | (1 << 39);

/// The package to test: $SIP_LB_DEB, else the newest in target/debian.
fn deb() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("SIP_LB_DEB") {
        return Ok(PathBuf::from(p));
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debian");
    let newest = std::fs::read_dir(&dir)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    newest.with_context(|| {
        format!("no .deb in {}: build it with `cargo xtask package --dev` (cargo xtask test does)", dir.display())
    })
}

/// The package installed; purged on drop (also when the test fails).
struct Installed;

impl Installed {
    fn install(deb: &PathBuf) -> Result<Installed> {
        let mut c = Command::new("dpkg");
        c.arg("-i").arg(deb).env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut c).map(|_| Installed)
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "sip-lb"]).output();
    }
}

fn text(cmd: &mut Command) -> Result<String> {
    Ok(String::from_utf8_lossy(&run(cmd)?.stdout).into_owned())
}

/// A `/proc/PID/status` field.
fn status_field(pid: u32, field: &str) -> Result<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s.lines().find(|l| l.starts_with(&format!("{field}:"))).with_context(|| format!("no {field}"))?;
    Ok(line[field.len() + 1..].trim().to_owned())
}

#[test]
fn package_installs_verifies_and_serves_as_its_user() -> Result<()> {
    let deb = deb()?;
    let installed = Installed::install(&deb)?;

    // Files, conffile, man pages, completions.
    for f in [
        "/usr/bin/sip-lb",
        UNIT,
        CONFIG,
        "/usr/share/bash-completion/completions/sip-lb",
        "/usr/share/zsh/vendor-completions/_sip-lb",
        "/usr/share/fish/vendor_completions.d/sip-lb.fish",
        "/usr/share/doc/sip-lb/examples/sip-lb.toml",
    ] {
        ensure!(std::path::Path::new(f).exists(), "{f} not installed by {}", deb.display());
    }
    let conffiles = text(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "sip-lb"]))?;
    ensure!(conffiles.contains(CONFIG), "{CONFIG} is not a conffile: {conffiles:?}");
    let page = text(Command::new("man").args(["--where", "sip-lb-top"]))?;
    ensure!(page.contains("/usr/share/man/man1/sip-lb-top.1"), "man --where sip-lb-top: {page}");
    let man = text(Command::new("man").args(["-P", "cat", "sip-lb-top"]).env("MANWIDTH", "100"))?;
    ensure!(man.contains("--once"), "the top man page does not document --once:\n{man}");
    let bash = std::fs::read_to_string("/usr/share/bash-completion/completions/sip-lb")?;
    ensure!(bash.contains("check-config") && bash.contains("--control"), "bash completions:\n{bash}");

    // The service user: a system account without a login.
    let user = text(Command::new("getent").args(["passwd", "sip-lb"]))?;
    let fields: Vec<&str> = user.trim().split(':').collect();
    let uid: u32 = fields.get(2).context("getent passwd")?.parse()?;
    ensure!(uid < 1000 && fields.get(6).is_some_and(|s| s.ends_with("nologin")), "{user}");
    let mode = text(Command::new("stat").args(["-c", "%U:%G %a", CONFIG]))?;
    ensure!(mode.trim() == "root:sip-lb 640", "{CONFIG}: {mode}");

    // The unit: systemd's own check, and what it promises.
    let verify = Command::new("systemd-analyze").args(["verify", UNIT]).output()?;
    let complaints = String::from_utf8_lossy(&verify.stderr);
    ensure!(
        verify.status.success() && !complaints.contains("sip-lb.service"),
        "systemd-analyze verify {UNIT}: {}\n{complaints}",
        verify.status
    );
    let unit = std::fs::read_to_string(UNIT)?;
    for line in [
        "User=sip-lb",
        "AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_NET_RAW CAP_PERFMON",
        "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_NET_RAW CAP_PERFMON",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStart=/usr/bin/sip-lb run --config /etc/sip-lb/sip-lb.toml",
    ] {
        ensure!(unit.lines().any(|l| l == line), "{UNIT} lacks {line:?}:\n{unit}");
    }
    let check = text(Command::new("/usr/bin/sip-lb").args(["check-config", CONFIG]))?;
    ensure!(check.contains("OK"), "{check}");

    // The installed binary with the packaged config, unchanged, as the
    // service would run it: in a namespace of its own, where its loopback
    // addresses (listen 127.0.0.1:5060, control :5070, backend :5080) are free.
    // Then with XDP attached to a veth whose far end is another namespace.
    let ns = NetNs::new("pt-pkg")?;
    let peer = NetNs::new("pt-peer")?;
    let _veth = Veth::new(&ns, LB_DEV, "10.77.0.1/24", &peer, PEER_DEV, "10.77.0.2/24")?;
    // The veth checksum trap (docs: issue 14): the peer computes checksums.
    peer.exec(&["ethtool", "-K", PEER_DEV, "tx", "off"])?;
    let (name, peer_name) = (ns.name().to_owned(), peer.name().to_owned());
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<()> {
                sip_lb_tests::netns::enter(&name)?;
                serve_as_the_service(uid)?;
                xdp_as_the_service(&peer_name)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
    })?;
    drop(peer);
    drop(ns);
    drop(installed);
    let gone = Command::new("getent").args(["passwd", "sip-lb"]).output()?;
    ensure!(!gone.status.success() && !std::path::Path::new(CONFIG).exists(), "purge left the user or the config");
    Ok(())
}

const LB_DEV: &str = "pt-pkg0";
const PEER_DEV: &str = "pt-peer0";

/// The installed sip-lb as the service would run it: the `sip-lb` user,
/// the unit's capabilities in every set that matters (and nothing else),
/// no new privileges; the packaged config plus `extra` flags.
fn start_as_the_service(label: &str, extra: &[&str]) -> Result<(ChildGuard, Control)> {
    let dir = scratch_dir(label)?;
    // (The unit's LimitMEMLOCK=infinity is left out: raising the hard limit
    // needs CAP_SYS_RESOURCE, which a test container may lack, and nothing
    // locks memory without AF_XDP.)
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=sip-lb", "--regid=sip-lb", "--init-groups"])
        .arg(format!("--inh-caps=-all,{CAPS}"))
        .arg(format!("--ambient-caps=-all,{CAPS}"))
        .arg(format!("--bounding-set=-all,{CAPS}"))
        .args(["--no-new-privs", "--", "/usr/bin/sip-lb", "run", "--config", CONFIG])
        .args(extra);
    let mut lb = ChildGuard::spawn("sip-lb", cmd, &dir)?;
    let control = Control::new("127.0.0.1:5070".parse()?);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while control.stats().is_err() {
        lb.ensure_running().with_context(|| lb.stderr_tail(20))?;
        if std::time::Instant::now() > deadline {
            bail!("the packaged sip-lb did not answer on 127.0.0.1:5070:\n{}", lb.stderr_tail(20));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((lb, control))
}

/// In the calling thread's namespace: start, serve one request, reload on
/// SIGHUP, stop on SIGTERM.
fn serve_as_the_service(uid: u32) -> Result<()> {
    let backend = Sink::bind("127.0.0.1:5080")?;
    let client = Sink::loopback()?;
    let (mut lb, control) = start_as_the_service("package", &[])?;
    // setpriv execs: the PID is sip-lb's.
    let pid = lb.pid();
    let uids = status_field(pid, "Uid")?;
    ensure!(uids.split_whitespace().all(|u| u == uid.to_string()), "not running as sip-lb ({uid}): Uid {uids}");
    let eff = u64::from_str_radix(&status_field(pid, "CapEff")?, 16)?;
    ensure!(eff == CAP_MASK, "CapEff {eff:#x}, want {CAP_MASK:#x}");
    let log = lb.stderr();
    ensure!(!log.contains("steering: none"), "no Call-ID steering with the unit's capabilities:\n{log}");

    // It serves: a request reaches the packaged backend through our Via.
    let req = client.request("MESSAGE", "package-1", 1);
    client.send_to(req.bytes(), "127.0.0.1:5060".parse()?)?;
    let (got, _) = backend.recv_text(Duration::from_secs(5)).with_context(|| lb.stderr_tail(20))?;
    let via = headers(&got, "Via");
    ensure!(via.first().is_some_and(|v| v.starts_with("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK")), "{got}");

    // SIGHUP (the unit's ExecReload) re-reads the config as the service user.
    let before = control.stats()?.generation;
    lb.signal(libc::SIGHUP)?;
    control.wait_stats(Duration::from_secs(5), "reload on SIGHUP", |s| s.generation > before)?;

    let status = lb.stop()?;
    ensure!(status.success(), "sip-lb exited with {status} on SIGTERM:\n{}", lb.stderr_tail(20));
    Ok(())
}

/// The same user and capabilities attach XDP (native mode on the veth) and
/// forward what crosses it: a request from the peer namespace reaches one
/// of the two backends (the packaged one on loopback, or the peer's).
fn xdp_as_the_service(peer_ns: &str) -> Result<()> {
    let local = Sink::bind("127.0.0.1:5080")?;
    // Sockets bound inside the peer namespace keep it; a thread of their own moves there.
    let (far, from) = std::thread::scope(|s| {
        s.spawn(|| -> Result<_> {
            sip_lb_tests::netns::enter(peer_ns)?;
            Ok((UdpSocket::bind("10.77.0.2:5080")?, UdpSocket::bind("10.77.0.2:0")?))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the peer thread panicked"))?
    })?;
    let (far, client) = (Sink::on(far, true, None)?, Sink::on(from, true, None)?);
    let flags =
        ["--listen", "10.77.0.1:5060", "--iface", LB_DEV, "--datapath", "socket", "--backend", "10.77.0.2:5080"];
    let (mut lb, _control) = start_as_the_service("package-xdp", &flags)?;
    let log = lb.stderr();
    ensure!(log.contains(&format!("steering: xdp-driver on {LB_DEV}")), "XDP not attached in native mode:\n{log}");
    let req = client.request("MESSAGE", "package-xdp-1", 1);
    client.send_to(req.bytes(), "10.77.0.1:5060".parse()?)?;
    let (_, got) = next_at(&[&local, &far], Duration::from_secs(5)).with_context(|| lb.stderr_tail(20))?;
    let via = headers(std::str::from_utf8(&got.bytes)?, "Via").first().map(|v| v.to_string());
    ensure!(via.as_deref().is_some_and(|v| v.starts_with("SIP/2.0/UDP 10.77.0.1:5060;branch=z9hG4bK")), "{via:?}");
    let status = lb.stop()?;
    ensure!(status.success(), "sip-lb exited with {status} on SIGTERM:\n{}", lb.stderr_tail(20));
    Ok(())
}
