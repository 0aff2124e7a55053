//! `sip-lb`: command line. The work happens in the library; this file wires
//! the control plane (tokio, signals) to the data plane (pinned workers).
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use clap::{CommandFactory, Parser, Subcommand};

use sip_lb::config::PinMode;
use sip_lb::config::{Config, RunArgs};
use sip_lb::control::{self, client::ControlArgs};
use sip_lb::dataplane::{self, stats::Summary, Dataplane};
use sip_lb::xdp;
use sip_lb_udp::affinity;

#[derive(Parser)]
#[command(name = "sip-lb", version, about = "Stateless SIP load balancer")]
struct Cli {
    /// Log lines as text, or as one JSON object per line for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the balancer until SIGINT/SIGTERM (SIGHUP reloads the config).
    Run(RunArgs),
    /// Validate a config file without starting: exit 0 if it would start,
    /// else 2 with the error and the line it is on.
    CheckConfig {
        /// The TOML config file.
        file: std::path::PathBuf,
    },
    /// List a running instance's backends: state, weight, counters.
    Backends(ControlArgs),
    /// Take a backend out of rotation (its Call-IDs move to the others).
    Drain(BackendArgs),
    /// Put a drained backend back into rotation.
    Enable(BackendArgs),
    /// Make a running instance re-read its config (like SIGHUP).
    Reload(ControlArgs),
    /// Live per-core and per-backend view of a running instance: a terminal
    /// UI (keys: arrows select, d drain, e enable, s sort, q quit), or the
    /// text table with --once or when stdout is not a terminal.
    Top(TopArgs),
    /// Ban a source prefix at a running instance (its datagrams are dropped).
    Block(BanArgs),
    /// Lift a runtime ban.
    Unblock(BanArgs),
    /// List a running instance's runtime bans (operator and automatic).
    Bans(ControlArgs),
    /// Withdraw this node's [cluster] VIPs, let the traffic still arriving
    /// drain, then stop the instance (exit 0): a rolling restart without loss.
    DrainNode(control::cluster::cli::DrainNodeArgs),
    /// Print the digest of a config's effective routing (pools, backends,
    /// weights, hash seeds, key ids, VIPs); nodes of a cluster must agree.
    ConfigDigest(control::cluster::cli::DigestArgs),
    /// Write the man pages and shell completions into DIR (packaging).
    #[command(hide = true)]
    GenerateDocs { dir: std::path::PathBuf },
}

#[derive(clap::Args)]
struct BanArgs {
    /// An IP address or prefix: 192.0.2.7, 203.0.113.0/24, 2001:db8::/32.
    prefix: String,
    /// Ban for this many seconds [default: until unblocked] (block only).
    #[arg(long = "for", value_name = "SECONDS")]
    seconds: Option<u64>,
    #[command(flatten)]
    control: ControlArgs,
}

#[derive(clap::Args)]
struct BackendArgs {
    /// The backend, `ip:port` as in the config.
    addr: String,
    #[command(flatten)]
    control: ControlArgs,
}

#[derive(clap::Args)]
struct TopArgs {
    /// Stop after this many screens [default: run until Ctrl-C].
    #[arg(long, short = 'n', value_name = "N")]
    iterations: Option<u64>,
    /// Print one text table and exit (also the output when stdout is not a terminal).
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    control: ControlArgs,
}

/// `sip-lb check-config FILE`: what `run --config FILE` would load, without
/// binding or attaching anything.
fn check_config(file: std::path::PathBuf) -> Result<()> {
    let args = RunArgs { config: Some(file.clone()), ..RunArgs::default() };
    let config = Config::load(&args)?;
    let backends: usize = config.pools.iter().map(|p| p.backends.len()).sum();
    println!(
        "{}: OK ({} listen address(es), {} pool(s), {backends} backend(s), {} worker(s))",
        file.display(),
        config.listen.len() + config.streams.len(),
        config.pools.len(),
        config.workers
    );
    Ok(())
}

/// Runs one control-API client command on a small runtime.
fn client<F: std::future::Future<Output = Result<String>>>(f: impl FnOnce() -> F) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let out = rt.block_on(f())?;
    print!("{out}");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SIP_LB_LOG").unwrap_or_else(|_| "info".into()));
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::CheckConfig { file } => check_config(file),
        Command::Backends(c) => client(|| control::client::backends(c.control)),
        Command::Drain(b) => client(|| control::client::set_drained(b.control.control, &b.addr, true)),
        Command::Enable(b) => client(|| control::client::set_drained(b.control.control, &b.addr, false)),
        Command::Reload(c) => client(|| control::client::reload(c.control)),
        Command::Block(b) => client(|| control::client::set_ban(b.control.control, &b.prefix, true, b.seconds)),
        Command::Unblock(b) => client(|| control::client::set_ban(b.control.control, &b.prefix, false, None)),
        Command::Bans(c) => client(|| control::client::bans(c.control)),
        Command::DrainNode(a) => client(|| control::cluster::cli::drain_node(a)),
        Command::ConfigDigest(a) => control::cluster::cli::config_digest(a),
        Command::GenerateDocs { dir } => sip_lb::cli_docs::write(Cli::command(), &dir),
        Command::Top(t) => client(|| async move {
            let mode = if t.once { control::top::Mode::Once } else { control::top::Mode::Auto };
            control::top::run(t.control.control, t.iterations, mode).await.map(|()| String::new())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sip-lb: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: RunArgs) -> Result<()> {
    // A panic anywhere (worker or control plane) ends the process rather
    // than leaving it half alive; the supervisor restarts it.
    sip_lb::fault::abort_on_any_panic();
    // Everything is validated and bound before any worker starts: a bad config
    // or a busy port exits here, nothing runs half-configured.
    let config = Config::load(&args)?;
    // The VIPs go on the loopback before the sockets bind to them.
    let cluster = control::cluster::Cluster::start(&config.cluster)?;
    let plan = Arc::new(ArcSwap::from_pointee(control::reload::build_plan(&config)));
    let listen: Vec<_> = config.listen.iter().map(|l| l.addr).collect();
    let sockets =
        dataplane::bind_sockets(&listen, config.workers, config.busy_poll_us).context("binding listen sockets")?;
    let allowed = affinity::allowed_cpus();
    let (cpus, pinned) = worker_cpus(config.pin, config.workers, &allowed);

    let streams_bound = sip_lb::stream::bind(&config)?;

    // Steering first: its programs load before the AF_XDP threads exist
    // (a signal arriving during verification makes BPF_PROG_LOAD fail).
    let selected = dataplane::afxdp::selected(&config);
    let mut steering = attach_steering(&config, &sockets, &cpus, selected, &plan.load().shield)?;
    let (shield, offenders) = dataplane::SharedShield::new(control::reload::shield_state(&config));
    // Before either data path starts: both workers copy into its tap.
    let hep = match &config.hep {
        Some(h) => Some(
            dataplane::hep::HepMirror::start(h, config.listen.iter().map(|l| l.advertise).collect())
                .context("starting HEP mirroring")?,
        ),
        None => None,
    };
    let null_forward = args.afxdp_null_forward;
    let hep_tap = hep.as_ref().map(|m| m.tap.clone());
    let mut afxdp =
        dataplane::afxdp::start_if_selected(&config, &sockets, &pinned, &plan, &shield, null_forward, hep_tap)?;
    if selected && afxdp.is_none() {
        // Fell back to the socket path: the XDP CPU-map steering takes the interface.
        drop(std::mem::take(&mut steering));
        steering = attach_steering(&config, &sockets, &cpus, false, &plan.load().shield)?;
    }

    let streams = match streams_bound.is_empty() && config.links.is_empty() {
        true => None,
        false => Some(sip_lb::stream::Streams::start(streams_bound, &config, &sockets, plan.clone(), shield.clone())?),
    };
    let extras = dataplane::Extras {
        relay: streams.as_ref().map(|s| Arc::new(s.relay())),
        stun: config.stun.then(Arc::default),
        hep: hep.as_ref().map(|m| m.tap.clone()),
    };
    let stun = extras.stun.clone();
    let dp = Dataplane::start(sockets, &pinned, plan.clone(), shield.clone(), extras)?;
    tracing::info!(
        listen = ?config.listen,
        streams = ?config.streams,
        workers = config.workers,
        ?cpus,
        "sip-lb forwarding"
    );
    match &afxdp {
        Some(x) => tracing::info!("datapath: {}; socket path still bound for what XDP passes", x.info),
        None => tracing::info!("datapath: socket"),
    }
    if config.security.secret.is_none() {
        tracing::warn!(
            "no [security] secret: branches are signed with a random key of this process, so responses \
             that cross a restart or reach another sip-lb node will be dropped (branch_mac), and the \
             flow tokens in our Path and Record-Route (registrations, dialogs) stop verifying; set \
             `secret` or `secret_file` (the same on every node) for production"
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // The program on `iface` drops what the shield blocks before the kernel.
    let xdp_shield = afxdp.as_ref().map(|x| x.xdp_shield()).or_else(|| steering.first().and_then(|s| s.shield()));
    shield.set_xdp_stage(xdp_shield.is_some());
    let setup = control::Setup {
        args,
        config,
        plan,
        shield,
        offenders,
        xdp_shield,
        // The AF_XDP workers (if any) follow the socket workers.
        workers: dp.stats().iter().chain(afxdp.iter().flat_map(|x| x.stats.iter())).cloned().collect(),
        cpus: dp.cpus().iter().chain(afxdp.iter().flat_map(|_| dp.cpus().iter())).copied().collect(),
        // The first listen address's programs carry the XDP counters.
        afxdp: afxdp.as_ref().map(|x| -> control::AfxdpReader { Box::new(x.reader()) }),
        xdp: steering.first().map(|s| -> control::XdpReader {
            let s = s.clone();
            Box::new(move || s.counters())
        }),
        streams: streams.as_ref().map(|s| s.stats()),
        stun,
        links: streams.as_ref().map(|s| s.links()),
        certs: streams.as_ref().and_then(|s| s.certs()),
        cluster: cluster.clone(),
        hep: hep.as_ref().map(|m| m.tap.stats.clone()),
    };
    let served = rt.block_on(control::run_until_shutdown(setup));
    // Withdraw before the workers stop; the VIPs go with `cluster`.
    if let Some(c) = &cluster {
        c.set_announced(false, "stopping");
    }

    if let Some(x) = afxdp.as_mut() {
        x.stop();
    }
    if let Some(s) = streams {
        s.stop();
    }
    let stats = dp.stop();
    drop(hep);
    let xsk_stats = afxdp.iter().flat_map(|x| x.stats.iter());
    for (i, s) in stats.iter().chain(xsk_stats).enumerate() {
        eprintln!("{}", Summary(i, s));
    }
    if let Some(x) = &afxdp {
        dataplane::afxdp::print_summary(x);
    }
    if let Some(Ok(c)) = steering.first().map(|s| s.counters()) {
        if let Some(x) = &c.xdp {
            eprintln!("xdp: {x}");
        }
        eprintln!("reuseport: {}", c.reuseport);
    }
    // Workers are stopped: now detach (Drop) the programs.
    drop(steering);
    drop(afxdp);
    served
}

/// Each worker's CPU (for the XDP CPU map) and whether it is pinned there.
/// `auto` pins only onto CPUs that were idle for the last 200 ms, and only
/// when there are enough of them: a pinned worker on a busy CPU waits for it.
fn worker_cpus(pin: PinMode, workers: usize, allowed: &[usize]) -> (Vec<usize>, Vec<Option<usize>>) {
    let spread = |from: &[usize]| -> Vec<usize> { (0..workers).map(|i| from[i % from.len()]).collect() };
    let cpus = match pin {
        PinMode::Off => {
            tracing::info!("workers not pinned (--pin off)");
            return (spread(allowed), vec![None; workers]);
        }
        PinMode::On => spread(allowed),
        PinMode::Auto => {
            let idle = affinity::idle_cpus(allowed, std::time::Duration::from_millis(200), 0.8);
            if idle.len() < workers {
                tracing::info!(
                    idle = ?idle,
                    "workers not pinned (--pin auto): {} idle CPU(s) for {workers} worker(s)",
                    idle.len()
                );
                return (spread(allowed), vec![None; workers]);
            }
            spread(&idle)
        }
    };
    let pinned = cpus.iter().map(|&c| Some(c)).collect();
    (cpus, pinned)
}

/// Call-ID steering for every listen address: with `--iface`, XDP on that
/// interface plus the reuseport selector; without, the reuseport selector
/// alone, which keeps every Call-ID on one worker even on loopback. Without
/// root or CAP_BPF + CAP_NET_ADMIN (and no `--iface`) there is no eBPF: the kernel's 4-tuple hash picks
/// the worker, which forwards just as correctly but without per-call affinity.
/// With the AF_XDP data path (`afxdp`), its program owns the interface and
/// the socket path keeps only the reuseport selector. The XDP program's
/// shield stage starts with `shield`; the control plane keeps it current
/// (reloads, runtime bans: docs/shield.md).
fn attach_steering(
    config: &Config,
    sockets: &[Vec<std::net::UdpSocket>],
    cpus: &[usize],
    afxdp: bool,
    shield: &sip_lb_proto::shield::ShieldPolicy,
) -> Result<Vec<Arc<xdp::Steering>>> {
    use std::os::fd::AsFd;
    // Root, or the packaged unit's CAP_BPF + CAP_NET_ADMIN, may load it.
    if config.iface.is_none() && !sip_lb::caps::may_load_bpf() {
        tracing::warn!(
            "steering: none (not root, no CAP_BPF + CAP_NET_ADMIN): workers chosen by the kernel's 4-tuple hash"
        );
        return Ok(Vec::new());
    }
    let ports: Vec<u16> = config.listen.iter().map(|l| l.addr.port()).collect();
    let worker_cpus: Vec<u32> = cpus.iter().map(|&c| c as u32).collect();
    let mut all = Vec::new();
    for (l, addr) in config.listen.iter().map(|l| l.addr).enumerate() {
        let fds: Vec<_> = sockets.iter().map(|w| w[l].as_fd()).collect();
        // One XDP program per interface: attach it with the first address.
        let iface = if l == 0 && !afxdp { config.iface.as_deref() } else { None };
        let s = xdp::Steering::attach(iface, &fds, &worker_cpus, &ports, config.xdp_redirect_above_pps, shield)
            .with_context(|| format!("attaching Call-ID steering for {addr}"))?;
        tracing::info!(%addr, "steering: {}", s.mode());
        all.push(Arc::new(s));
    }
    Ok(all)
}
