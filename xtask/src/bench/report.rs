//! The report: Markdown tables (target/bench/report.md, also printed) and PNG
//! bar charts beside it.
use std::fmt::Write;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use super::balancer::Kind;
use super::calls::CallRun;
use super::plot::bar_chart;
use super::{Env, Plan, Results};

pub fn write(env: &Env, plan: &Plan, r: &Results, took: Duration) -> Result<String> {
    let mut md = String::new();
    let w = &mut md;
    writeln!(w, "# sip-lb bench ({} plan)\n", plan.name)?;
    writeln!(w, "{} Load average when measuring began: {}.\n", machine(env), r.load_before)?;
    writeln!(w, "Took {:.0} s. Logs of every process: `target/bench/logs/`.\n", took.as_secs_f64())?;
    if let Some(why) = &r.skipped_sip_lb {
        writeln!(w, "**sip-lb not measured:** {why}.\n")?;
    }
    cpu_section(w, plan, &r.cpu)?;
    fixed_section(w, &r.fixed)?;
    rate_section(w, r)?;
    latency_section(w, r)?;
    memory_section(w, r)?;
    order_section(w, &r.order)?;
    net_section(w, plan, &r.net)?;
    net_packets_section(w, plan, r)?;
    shield_flood_section(w, plan, &r.shield_flood)?;
    if !r.errors.is_empty() {
        writeln!(w, "## Runs that failed\n")?;
        for e in &r.errors {
            writeln!(w, "- {}", e.replace('\n', " "))?;
        }
        writeln!(w)?;
    }
    plots(env, r)?;
    writeln!(w, "Plots: `cpu.png`, `max-rate.png`, `latency.png`, `memory.png` beside this file.")?;
    std::fs::write(env.out.join("report.md"), &md)?;
    Ok(md)
}

fn machine(env: &Env) -> String {
    let sh = |cmd: &str| {
        Command::new("sh")
            .args(["-c", cmd])
            .current_dir(&env.repo)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "Machine: {} CPUs ({}), kernel {}, net.core.rmem_max {}, load average at the end {}. Kamailio: {}. \
         SIPp: {}. sip-lb: commit {}{}.",
        sip_lb_udp::affinity::cpu_count(),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        sh("uname -r"),
        sh("cat /proc/sys/net/core/rmem_max"),
        sh("cut -d' ' -f1-3 /proc/loadavg"),
        sh("kamailio -v | head -1 | cut -d' ' -f2-3"),
        sh("sipp -v 2>&1 | grep -o 'v[0-9.]*' | head -1"),
        sh("git rev-parse --short HEAD"),
        if sh("git status --porcelain -- sip-lb sip-lb-common").is_empty() {
            ""
        } else {
            " (with uncommitted changes)"
        },
    )
}

fn us_per_msg(runs: &[&CallRun]) -> Option<f64> {
    let msgs: u64 = runs.iter().map(|c| c.messages()).sum();
    let cpu: f64 = runs.iter().map(|c| c.usage.cpu_s).sum();
    (msgs > 0).then(|| cpu * 1e6 / msgs as f64)
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.digits$}"))
}

fn cpu_section(w: &mut String, plan: &Plan, runs: &[CallRun]) -> Result<()> {
    writeln!(w, "## 1. CPU per forwarded message (SIPp calls, 1 worker / 1 child)\n")?;
    writeln!(
        w,
        "SIPp UAC -> balancer -> two SIPp UAS, {} s per run, {} alternating round(s). Machine µs = the whole \
         machine's busy time (CPUs x wall - cpuidle residency: SIPp, balancer and softirq) per message SIPp \
         completed; on loopback the receive path is charged to the sender, so this is the honest figure. CPU = \
         utime+stime of the balancer's processes (all threads; Kamailio: main and every child) from /proc over the call window. \
         Messages = the balancer's own count (sip-lb: shutdown counters; Kamailio: core:fwd_requests + \
         core:fwd_replies); SIPp's view (6 per completed call) beside it.\n",
        plan.cpu_seconds, plan.cpu_rounds
    )?;
    writeln!(w, "| calls/s | balancer | round | calls ok / failed | messages (own count) | messages (SIPp) | CPU s | µs CPU / message | machine µs / message |")?;
    writeln!(w, "|---|---|---|---|---|---|---|---|---|")?;
    for (i, c) in runs.iter().enumerate() {
        let round = runs[..i].iter().filter(|d| d.kind == c.kind && d.rate == c.rate).count() + 1;
        writeln!(
            w,
            "| {} | {} | {round} | {} / {} | {} | {} | {:.2} | {} | {} |",
            c.rate,
            c.kind.label(c.workers),
            c.uac.successful,
            c.uac.failed,
            c.usage.forwarded.map_or("n/a".into(), |n| n.to_string()),
            c.sipp_messages(),
            c.usage.cpu_s,
            fmt_opt(us_per_msg(&[c]), 2),
            fmt_opt((c.sipp_messages() > 0).then(|| c.usage.machine_cpu_s * 1e6 / c.sipp_messages() as f64), 2)
        )?;
    }
    writeln!(w, "\n| calls/s | sip-lb µs/msg | Kamailio µs/msg | sip-lb / Kamailio | target ≤ 0.25 |")?;
    writeln!(w, "|---|---|---|---|---|")?;
    for &rate in &plan.cpu_rates {
        let of = |k: Kind| us_per_msg(&runs.iter().filter(|c| c.kind == k && c.rate == rate).collect::<Vec<_>>());
        let (s, k) = (of(Kind::SipLb), of(Kind::Kamailio));
        let ratio = s.zip(k).map(|(s, k)| s / k);
        let verdict = ratio.map_or("n/a", |x| if x <= 0.25 { "met" } else { "not met" });
        writeln!(w, "| {rate} | {} | {} | {} | {verdict} |", fmt_opt(s, 2), fmt_opt(k, 2), fmt_opt(ratio, 3))?;
    }
    writeln!(w)?;
    Ok(())
}

fn fixed_section(w: &mut String, runs: &[super::packets::LatencyRun]) -> Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    writeln!(w, "### 1b. The same figure at a fixed packet rate, with the null forwarder as the kernel-path floor\n")?;
    writeln!(
        w,
        "Paced blaster (INVITEs only, fresh Call-ID each) -> forwarder (1 worker / 1 child) -> two sinks. \
         CPU per datagram the sinks received. 12,000 msg/s is the message rate of 2000 calls/s.\n"
    )?;
    writeln!(w, "| msg/s | forwarder | CPU µs / msg | × null forwarder | p50 µs | p99 µs | other load (CPUs) |")?;
    writeln!(w, "|---|---|---|---|---|---|---|")?;
    for x in runs {
        let null = runs.iter().find(|n| n.kind == Some(Kind::Null) && n.rate == x.rate).and_then(|n| n.us_per_msg());
        let times = x.us_per_msg().zip(null).map(|(a, b)| a / b);
        writeln!(
            w,
            "| {:.0} | {} | {} | {} | {:.1} | {:.1} | {} |",
            x.rate,
            x.kind.map_or("direct".into(), |k| k.label(x.workers)),
            fmt_opt(x.us_per_msg(), 2),
            fmt_opt(times, 2),
            x.p50_ns as f64 / 1000.0,
            x.p99_ns as f64 / 1000.0,
            x.usage.as_ref().map_or("n/a".into(), |u| format!("{:.2}", u.other_cpus))
        )?;
    }
    writeln!(w)?;
    Ok(())
}

fn mean_rate(r: &Results, kind: Kind, workers: usize) -> Option<f64> {
    let v: Vec<f64> = r.rates.iter().filter(|x| x.kind == kind && x.workers == workers).map(|x| x.rate).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn rate_section(w: &mut String, r: &Results) -> Result<()> {
    writeln!(w, "## 2. Maximum forwarding rate (blaster -> forwarder -> two counting sinks)\n")?;
    writeln!(
        w,
        "Open-loop sendmmsg blast of INVITEs (fresh Call-ID each, {} source ports); rate = datagrams the sinks \
         received per second after a 0.5 s warm-up. Blaster and sinks share the machine's CPUs with the forwarder.\n",
        super::packets::FLOWS
    )?;
    writeln!(w, "| forwarder | sent/s | forwarded/s | lost | CPU µs / msg at max | datagrams per worker (sip-lb) | other load (CPUs) |")?;
    writeln!(w, "|---|---|---|---|---|---|---|")?;
    for x in &r.rates {
        let per = (x.usage.cpu_s > 0.0).then(|| x.usage.cpu_s * 1e6 / (x.rate * x.window_s).max(1.0));
        writeln!(
            w,
            "| {} | {:.0} | {:.0} | {:.1}% | {} | {} | {:.2} |",
            x.kind.label(x.workers),
            x.sent_rate,
            x.rate,
            100.0 * x.loss(),
            fmt_opt(per, 2),
            per_worker(&x.usage),
            x.usage.other_cpus
        )?;
    }
    writeln!(
        w,
        "\n| workers | sip-lb msg/s | Kamailio msg/s | null forwarder msg/s | sip-lb / null | target ≥ 0.80 |"
    )?;
    writeln!(w, "|---|---|---|---|---|---|")?;
    for workers in [1, 2] {
        let (s, k, n) = (
            mean_rate(r, Kind::SipLb, workers),
            mean_rate(r, Kind::Kamailio, workers),
            mean_rate(r, Kind::Null, workers),
        );
        let ratio = s.zip(n).map(|(s, n)| s / n);
        let verdict = ratio.map_or("n/a", |x| if x >= 0.8 { "met" } else { "not met" });
        writeln!(
            w,
            "| {workers} | {} | {} | {} | {} | {verdict} |",
            fmt_opt(s, 0),
            fmt_opt(k, 0),
            fmt_opt(n, 0),
            fmt_opt(ratio, 3)
        )?;
    }
    writeln!(w)?;
    Ok(())
}

fn latency_section(w: &mut String, r: &Results) -> Result<()> {
    writeln!(w, "## 3. Added latency at 50% of each forwarder's maximum rate\n")?;
    writeln!(
        w,
        "Paced blast (load tools pinned to the last CPU, forwarders from CPU 0 up); each datagram carries its \
         send time (CLOCK_REALTIME) and the sink socket's kernel receive timestamp (SO_TIMESTAMPNS) ends it, so \
         the sink's own wake-up is not counted. Baseline: the same blast straight to a sink, just before. \
         Added = through the forwarder minus baseline, per percentile. First 10% of samples dropped (warm-up).\n"
    )?;
    writeln!(w, "| forwarder | msg/s | p50 µs | p99 µs | baseline p50 / p99 µs | added p50 µs | added p99 µs | p99 target < 100 µs | lost | CPU µs / msg | other load (CPUs) |")?;
    writeln!(w, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for (x, b) in &r.latency {
        let us = |ns: u32| ns as f64 / 1000.0;
        let (a50, a99) = (us(x.p50_ns) - us(b.p50_ns), us(x.p99_ns) - us(b.p99_ns));
        writeln!(
            w,
            "| {} | {:.0} | {:.1} | {:.1} | {:.1} / {:.1} | {:.1} | {:.1} | {} | {:.2}% | {} | {} |",
            x.kind.map_or("direct".into(), |k| k.label(x.workers)),
            x.rate,
            us(x.p50_ns),
            us(x.p99_ns),
            us(b.p50_ns),
            us(b.p99_ns),
            a50,
            a99,
            if a99 < 100.0 { "met" } else { "not met" },
            100.0 * (1.0 - x.received as f64 / x.sent.max(1) as f64),
            fmt_opt(x.us_per_msg(), 2),
            x.usage.as_ref().map_or("n/a".into(), |u| format!("{:.2}", u.other_cpus))
        )?;
    }
    writeln!(w)?;
    Ok(())
}

/// Peak RSS per forwarder and worker count, the largest over all its runs.
fn memory_rows(r: &Results) -> Vec<(String, u64, u64, usize)> {
    let mut all: Vec<(Kind, usize, &super::balancer::Usage)> = Vec::new();
    all.extend(r.cpu.iter().chain(&r.order).map(|c| (c.kind, c.workers, &c.usage)));
    all.extend(r.rates.iter().map(|x| (x.kind, x.workers, &x.usage)));
    all.extend(r.latency.iter().filter_map(|(x, _)| Some((x.kind?, x.workers, x.usage.as_ref()?))));
    let mut rows = Vec::new();
    for kind in [Kind::SipLb, Kind::Kamailio, Kind::Null] {
        for workers in [1, 2] {
            let mine: Vec<_> = all.iter().filter(|(k, wk, _)| *k == kind && *wk == workers).collect();
            if mine.is_empty() {
                continue;
            }
            let max = mine.iter().map(|(_, _, u)| u.hwm_max_kib).max().unwrap_or(0);
            let sum = mine.iter().map(|(_, _, u)| u.hwm_sum_kib).max().unwrap_or(0);
            let procs = mine.iter().map(|(_, _, u)| u.processes).max().unwrap_or(0);
            rows.push((kind.label(workers), max, sum, procs));
        }
    }
    rows
}

fn memory_section(w: &mut String, r: &Results) -> Result<()> {
    writeln!(
        w,
        "Other load = CPUs' worth of work by processes other than the bench and the forwarder during the run \
         (machine busy time from cpuidle residency, minus the bench and the forwarder): on a shared machine, a forwarder pinned to a CPU that others use gets only a share of it.\n"
    )?;
    writeln!(w, "## 4. Peak memory (VmHWM from /proc/PID/status, largest over all runs)\n")?;
    writeln!(
        w,
        "Kamailio is several processes sharing memory; the sum counts shared pages once per process that \
         touched them, so the truth is between the two columns.\n"
    )?;
    writeln!(w, "| forwarder | processes | peak RSS, largest process (MiB) | peak RSS summed over processes (MiB) |")?;
    writeln!(w, "|---|---|---|---|")?;
    for (label, max, sum, procs) in memory_rows(r) {
        writeln!(w, "| {label} | {procs} | {:.1} | {:.1} |", max as f64 / 1024.0, sum as f64 / 1024.0)?;
    }
    writeln!(w)?;
    Ok(())
}

fn order_section(w: &mut String, runs: &[CallRun]) -> Result<()> {
    writeln!(w, "## 5. Per-call ordering with 2 workers / 2 children\n")?;
    writeln!(
        w,
        "Two SIPp UACs (half the rate each, so several flows) -> balancer -> two UAS. Unexpected = SIPp's \
         Unexpected-Msg count over UACs and UASs (a reordered message fails its call). Target for sip-lb: 0 \
         lost calls with both workers busy.\n"
    )?;
    writeln!(w, "| balancer | calls/s | calls placed | ok | failed | unexpected-msg | lost | datagrams per worker | µs CPU / msg |")?;
    writeln!(w, "|---|---|---|---|---|---|---|---|---|")?;
    for c in runs {
        let spread = per_worker(&c.usage);
        writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {:.2}% | {spread} | {} |",
            c.kind.label(c.workers),
            c.rate,
            c.uac.created,
            c.uac.successful,
            c.uac.failed,
            c.unexpected(),
            100.0 * c.uac.failed as f64 / c.uac.created.max(1) as f64,
            fmt_opt(us_per_msg(&[c]), 2)
        )?;
    }
    writeln!(w)?;
    Ok(())
}

fn per_worker(u: &super::balancer::Usage) -> String {
    if u.per_worker_rx.is_empty() {
        return "n/a".into();
    }
    u.per_worker_rx.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" / ")
}

fn plots(env: &Env, r: &Results) -> Result<()> {
    let mut rows = Vec::new();
    let mut rates: Vec<u64> = r.cpu.iter().map(|c| c.rate).collect();
    rates.dedup();
    for kind in [Kind::SipLb, Kind::Kamailio] {
        let v: Vec<f64> = rates
            .iter()
            .map(|&rate| {
                us_per_msg(&r.cpu.iter().filter(|c| c.kind == kind && c.rate == rate).collect::<Vec<_>>())
                    .unwrap_or(f64::NAN)
            })
            .collect();
        rows.push((kind.name().to_string(), v));
    }
    let series: Vec<String> = rates.iter().map(|r| format!("{r} calls/s")).collect();
    let series: Vec<&str> = series.iter().map(String::as_str).collect();
    std::fs::write(
        env.out.join("cpu.png"),
        bar_chart("CPU per forwarded message (lower is better)", "us", &series, &rows),
    )?;

    let rows: Vec<(String, Vec<f64>)> = [Kind::SipLb, Kind::Kamailio, Kind::Null]
        .iter()
        .map(|&k| (k.name().to_string(), [1, 2].iter().map(|&wk| mean_rate(r, k, wk).unwrap_or(f64::NAN)).collect()))
        .collect();
    std::fs::write(
        env.out.join("max-rate.png"),
        bar_chart("Max forwarding rate (msg/s)", "", &["1 worker", "2 workers"], &rows),
    )?;

    let rows: Vec<(String, Vec<f64>)> = r
        .latency
        .iter()
        .map(|(x, b)| {
            let label = x.kind.map_or("direct".into(), |k| k.label(x.workers));
            (label, vec![(x.p50_ns as f64 - b.p50_ns as f64) / 1000.0, (x.p99_ns as f64 - b.p99_ns as f64) / 1000.0])
        })
        .collect();
    std::fs::write(
        env.out.join("latency.png"),
        bar_chart("Added latency at 50% of max rate", "us", &["p50", "p99"], &rows),
    )?;

    let rows: Vec<(String, Vec<f64>)> = memory_rows(r)
        .into_iter()
        .map(|(l, max, sum, _)| (l, vec![max as f64 / 1024.0, sum as f64 / 1024.0]))
        .collect();
    std::fs::write(
        env.out.join("memory.png"),
        bar_chart("Peak RSS (VmHWM)", "MiB", &["largest process", "sum of processes"], &rows),
    )?;
    Ok(())
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn net_section(w: &mut String, plan: &Plan, runs: &[super::netlab::NetRun]) -> Result<()> {
    use super::netlab::Contender;
    if runs.is_empty() {
        return Ok(());
    }
    writeln!(w, "## 6. Machine-wide CPU per message in network namespaces\n")?;
    writeln!(
        w,
        "SIPp UAC (client ns) -> balancer (lb ns, {} workers / children, pinned) -> two SIPp UAS (farm ns), veth \
         pairs, {} s per run, {} rounds in rotating order. Machine CPU = CPUs x wall - cpuidle residency over the \
         call window (everything: SIPp, the balancer, softirq wherever it ran); per message SIPp completed (6 per \
         call). The baseline is the lb namespace as a plain IP router (UAC straight to one UAS): *added* = a \
         contender's median minus the router's. The balancer's own utime+stime beside it.\n",
        super::netlab::WORKERS,
        plan.net_seconds,
        plan.net_rounds
    )?;
    writeln!(w, "| calls/s | forwarder | round | calls ok / failed / unfinished | UDP errors client / lb / farm | machine CPU s | wall s | machine µs/msg | own µs/msg | per-worker rx |")?;
    writeln!(w, "|---|---|---|---|---|---|---|---|---|---|")?;
    for x in runs {
        writeln!(
            w,
            "| {} | {} | {} | {} / {} / {} | {} | {:.2} | {:.1} | {} | {} | {:?} |",
            x.rate,
            x.contender.name(),
            x.round + 1,
            x.uac.successful,
            x.uac.failed,
            x.uac.created.saturating_sub(x.uac.successful + x.uac.failed),
            x.udp_errors.iter().map(u64::to_string).collect::<Vec<_>>().join(" / "),
            x.machine_cpu_s,
            x.wall_s,
            fmt_opt(x.machine_us_per_msg(), 2),
            fmt_opt(x.process_us_per_msg(), 2),
            x.per_worker_rx
        )?;
    }
    for &rate in &plan.net_rates {
        let of = |c: Contender, f: fn(&super::netlab::NetRun) -> Option<f64>| {
            median(runs.iter().filter(|x| x.contender == c && x.rate == rate).filter_map(f).collect())
        };
        let machine = |c| of(c, super::netlab::NetRun::machine_us_per_msg);
        let own = |c| of(c, super::netlab::NetRun::process_us_per_msg);
        let router = machine(Contender::Router);
        let added = |c| machine(c).zip(router).map(|(m, r)| m - r);
        writeln!(w, "\nMedians at {rate} calls/s:\n")?;
        writeln!(w, "| forwarder | machine µs/msg | added over the router µs/msg | own µs/msg |")?;
        writeln!(w, "|---|---|---|---|")?;
        let mut seen = Vec::new();
        for x in runs.iter().filter(|x| x.rate == rate) {
            if seen.contains(&x.contender) {
                continue;
            }
            seen.push(x.contender);
            let c = x.contender;
            writeln!(
                w,
                "| {} | {} | {} | {} |",
                c.name(),
                fmt_opt(machine(c), 2),
                fmt_opt(added(c), 2),
                fmt_opt(own(c), 2)
            )?;
        }
        let (sock, xdp, kam) = (
            Contender::Balancer(Kind::SipLb),
            Contender::Balancer(Kind::SipLbXdp),
            Contender::Balancer(Kind::Kamailio),
        );
        let ratio = |a: Option<f64>, b: Option<f64>| fmt_opt(a.zip(b).map(|(a, b)| a / b), 3);
        let afxdp = Contender::Balancer(Kind::SipLbAfxdp);
        let always = Contender::Balancer(Kind::SipLbXdpAlways);
        let base = Contender::Balancer(Kind::BaselineXdp);
        let rows = [
            (sock, kam, "sip-lb (socket path) / Kamailio"),
            (afxdp, kam, "sip-lb AF_XDP / Kamailio (goal <= 0.25)"),
            (afxdp, sock, "sip-lb AF_XDP / socket path (goal <= 0.5)"),
            (xdp, sock, "socket path with XDP steering / without (steering's price; goal <= 1.10)"),
            (always, sock, "XDP steering, --xdp-redirect-above 0 / without"),
            (xdp, base, "XDP steering / the baseline build's"),
        ];
        writeln!(w, "\n| ratio | machine | added |")?;
        writeln!(w, "|---|---|---|")?;
        let measured = |c: Contender| runs.iter().any(|x| x.contender == c && x.rate == rate);
        for (a, b, what) in rows.into_iter().filter(|(a, b, _)| measured(*a) && measured(*b)) {
            writeln!(w, "| {what} | {} | {} |", ratio(machine(a), machine(b)), ratio(added(a), added(b)))?;
        }
    }
    writeln!(w)?;
    Ok(())
}

fn net_packets_section(w: &mut String, plan: &Plan, r: &Results) -> Result<()> {
    if r.net_rates.is_empty() && r.net_fixed.is_empty() {
        return Ok(());
    }
    writeln!(w, "## 7. Blaster runs in network namespaces\n")?;
    writeln!(
        w,
        "The blaster ({} source ports, client ns) -> forwarder (lb ns) -> two sinks (farm ns), veth pairs. Max \
         rate: open loop for {:.0} s. Machine µs = the whole machine's busy time (CPUs x wall - cpuidle \
         residency) per datagram the sinks received; own µs = the forwarder's utime+stime.\n",
        super::packets::FLOWS,
        plan.net_blast_seconds
    )?;
    if !r.net_rates.is_empty() {
        writeln!(
            w,
            "| forwarder | sent/s | forwarded/s | lost | machine µs / msg | own µs / msg | datagrams per worker |"
        )?;
        writeln!(w, "|---|---|---|---|---|---|---|")?;
        for x in &r.net_rates {
            let msgs = (x.rate * x.window_s).max(1.0);
            writeln!(
                w,
                "| {} | {:.0} | {:.0} | {:.1}% | {:.2} | {:.2} | {} |",
                x.kind.label(x.workers),
                x.sent_rate,
                x.rate,
                100.0 * x.loss(),
                x.usage.machine_cpu_s * 1e6 / msgs,
                x.usage.cpu_s * 1e6 / msgs,
                per_worker(&x.usage)
            )?;
        }
        let rate_of =
            |k: Kind, workers: usize| r.net_rates.iter().find(|x| x.kind == k && x.workers == workers).map(|x| x.rate);
        writeln!(
            w,
            "\n| workers | socket path / null forwarder | with XDP steering / null | AF_XDP / null | AF_XDP / AF_XDP null \
             (goal >= 0.8) | AF_XDP / socket path (goal >= 2) | AF_XDP / baseline build's |"
        )?;
        writeln!(w, "|---|---|---|---|---|---|---|")?;
        for workers in [1, 2] {
            let over = |a, b| fmt_opt(rate_of(a, workers).zip(rate_of(b, workers)).map(|(a, b)| a / b), 3);
            writeln!(
                w,
                "| {workers} | {} | {} | {} | {} | {} | {} |",
                over(Kind::SipLb, Kind::Null),
                over(Kind::SipLbXdp, Kind::Null),
                over(Kind::SipLbAfxdp, Kind::Null),
                over(Kind::SipLbAfxdp, Kind::AfxdpNull),
                over(Kind::SipLbAfxdp, Kind::SipLb),
                over(Kind::SipLbAfxdp, Kind::BaselineAfxdp)
            )?;
        }
        writeln!(w)?;
    }
    if !r.net_fixed.is_empty() {
        writeln!(
            w,
            "Fixed rate {:.0} msg/s, {:.0} s, {} rounds in rotating order, 2 workers / children; *added* = median \
             machine µs/msg minus the direct run's (blaster -> sink routed by the lb namespace).\n",
            plan.net_fixed_rate, plan.net_fixed_seconds, plan.net_fixed_rounds
        )?;
        writeln!(w, "| forwarder | round | received / sent | machine µs / msg | own µs / msg | p50 µs | p99 µs |")?;
        writeln!(w, "|---|---|---|---|---|---|---|")?;
        let name = |k: Option<Kind>| k.map_or("direct (IP router)".into(), |k| k.label(2));
        for (i, x) in r.net_fixed.iter().enumerate() {
            let round = r.net_fixed[..i].iter().filter(|y| y.kind == x.kind).count() + 1;
            writeln!(
                w,
                "| {} | {round} | {} / {} | {} | {} | {:.1} | {:.1} |",
                name(x.kind),
                x.received,
                x.sent,
                fmt_opt(x.machine_us_per_msg(), 2),
                fmt_opt(x.us_per_msg(), 2),
                x.p50_ns as f64 / 1000.0,
                x.p99_ns as f64 / 1000.0
            )?;
        }
        let med = |k: Option<Kind>| {
            median(r.net_fixed.iter().filter(|x| x.kind == k).filter_map(|x| x.machine_us_per_msg()).collect())
        };
        let direct = med(None);
        writeln!(w, "\n| forwarder | machine µs/msg (median) | added over direct | added / Kamailio's |")?;
        writeln!(w, "|---|---|---|---|")?;
        let kam = med(Some(Kind::Kamailio)).zip(direct).map(|(k, d)| k - d);
        let mut seen = Vec::new();
        for x in &r.net_fixed {
            if seen.contains(&x.kind) {
                continue;
            }
            seen.push(x.kind);
            let added = med(x.kind).zip(direct).map(|(m, d)| m - d);
            writeln!(
                w,
                "| {} | {} | {} | {} |",
                name(x.kind),
                fmt_opt(med(x.kind), 2),
                fmt_opt(added, 2),
                fmt_opt(added.zip(kam).map(|(a, k)| a / k), 3)
            )?;
        }
        writeln!(w)?;
    }
    Ok(())
}

/// Comparison 8: the same flood with the shield on and off.
fn shield_flood_section(w: &mut String, plan: &Plan, runs: &[super::shieldflood::FloodRun]) -> Result<()> {
    use super::shieldflood::Mode;
    if runs.is_empty() {
        return Ok(());
    }
    writeln!(
        w,
        "## 8. Machine-wide CPU during a REGISTER flood, shield on vs off
"
    )?;
    writeln!(
        w,
        "One source floods sip-lb (XDP on a veth, 1 worker) with REGISTERs written as raw frames, paced to {:.0} \
         frames/s; shield on (`rate = 2000`, banned after 1 s over it: dropped in XDP) or off (every REGISTER \
         forwarded to a counting backend). {:.0} s windows after a {:.0} s warm-up, {} rounds in rotating order \
         with a run without flood. Busy = the whole machine's CPUs (CPUs x wall - cpuidle residency), other \
         tenants included.\n",
        plan.flood_pps,
        plan.flood_seconds,
        super::shieldflood::WARM_UP.as_secs_f64(),
        plan.flood_rounds
    )?;
    writeln!(
        w,
        "| run | round | sent frames/s | machine busy CPUs | sip-lb CPUs | sender CPUs | worker rx | XDP dropped |"
    )?;
    writeln!(w, "|---|---|---|---|---|---|---|---|")?;
    for x in runs {
        writeln!(
            w,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
            x.mode.name(),
            x.round + 1,
            x.sent_pps,
            x.busy_cpus,
            x.lb_cpus,
            x.sender_cpus,
            x.worker_rx,
            x.xdp_dropped
        )?;
    }
    let med = |m: Mode, f: fn(&super::shieldflood::FloodRun) -> f64| {
        median(runs.iter().filter(|x| x.mode == m).map(f).collect())
    };
    let busy = |m| med(m, |x| x.busy_cpus);
    let lb = |m| med(m, |x| x.lb_cpus);
    // The flood's cost per frame as the processes pay it: the sender's
    // thread (the veth receive and the XDP program run inline in its
    // softirq, charged to it here: no IRQ time accounting) plus sip-lb.
    let per_frame = |m| med(m, |x| if x.sent_pps > 0.0 { (x.sender_cpus + x.lb_cpus) * 1e6 / x.sent_pps } else { 0.0 });
    let idle = busy(Mode::Idle);
    let net = |m| busy(m).zip(idle).map(|(b, i)| b - i);
    writeln!(w, "\n| median | machine busy CPUs | minus no-flood run | sip-lb CPUs | sender + sip-lb µs / frame |")?;
    writeln!(w, "|---|---|---|---|---|")?;
    for m in Mode::ALL {
        let f = if m == Mode::Idle { "-".to_string() } else { fmt_opt(per_frame(m), 2) };
        writeln!(
            w,
            "| {} | {} | {} | {} | {f} |",
            m.name(),
            fmt_opt(busy(m), 2),
            fmt_opt(net(m), 2),
            fmt_opt(lb(m), 2)
        )?;
    }
    // A ratio over a figure near zero says nothing.
    let ratio = |a: Option<f64>, b: Option<f64>| {
        a.zip(b)
            .map_or("-".into(), |(a, b)| if b >= 0.05 { format!("{:.2}", a / b) } else { format!("- (on: {b:.2})") })
    };
    writeln!(
        w,
        "\nShield off / on: machine busy {}, minus the no-flood run {}, sip-lb's own {}, sender + sip-lb per \
         frame {}. A machine near {} busy CPUs without the flood is saturated by others: the machine-wide \
         figures then cannot show the difference.\n",
        ratio(busy(Mode::ShieldOff), busy(Mode::ShieldOn)),
        ratio(net(Mode::ShieldOff), net(Mode::ShieldOn)),
        ratio(lb(Mode::ShieldOff), lb(Mode::ShieldOn)),
        ratio(per_frame(Mode::ShieldOff), per_frame(Mode::ShieldOn)),
        sip_lb_udp::affinity::cpu_count()
    )?;
    Ok(())
}
