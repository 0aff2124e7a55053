//! One frame of the terminal UI from an [`App`]: header, workers (per core)
//! and backends with rate sparklines, drops and shield by reason, the
//! AF_XDP counters, the keys.
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Sparkline};
use ratatui::Frame;

use super::app::App;
use super::rates::ReasonRate;
use super::unaccounted::unaccounted;

const WORKER_COLS: u16 = 82;
const BACKEND_COLS: u16 = 88;

pub fn draw(f: &mut Frame, app: &App) {
    let n_workers = app.now.workers.len() as u16;
    let n_backends = app.now.backends.len() as u16;
    let seen = |l: &[ReasonRate]| l.iter().filter(|r| r.2 > 0).count();
    let reasons = seen(&app.rates.drops).max(seen(&app.rates.shield) + 1) as u16;
    let xdp = app.now.afxdp.as_ref().map_or(0, |a| a.queues.len() as u16 + 4);
    let [header, workers, backends, drops, afxdp, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(n_workers + 4),
        Constraint::Min(n_backends.min(3) + 3),
        Constraint::Length(reasons + 2),
        Constraint::Length(xdp),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let lost = unaccounted(&app.now);
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("sip-lb top ", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!(
                "{}  config generation {}  reload failures {}  shield bans {}  udp csum errors {}",
                app.addr, app.now.generation, app.now.reload_failures, app.now.shield_bans, app.now.udp_in_csum_errors
            )),
        ])),
        header,
    );
    draw_workers(f, app, workers, &lost.workers);
    draw_backends(f, app, backends);
    let [d, s] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(drops);
    f.render_widget(reason_list(" drops by reason ", &app.rates.drops, None), d);
    f.render_widget(reason_list(" shield ", &app.rates.shield, Some(app.now.shield_bans)), s);
    if xdp > 0 {
        draw_afxdp(f, app, afxdp, lost.xdp.unwrap_or(0));
    }
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(
                " ↑/↓ select  d drain  e enable  s sort  q quit ",
                Style::new().add_modifier(Modifier::REVERSED),
            ),
            Span::raw(format!("  {}", app.status)),
        ])),
        keys,
    );
}

/// One table row per line of `inner` (after the column header): text on
/// the left, a sparkline of `series` in what is left of the width.
fn row(f: &mut Frame, inner: Rect, i: u16, cols: u16, text: Line, series: &[u64], style: Style) {
    let y = inner.y + 1 + i;
    if y >= inner.y + inner.height {
        return;
    }
    let area = Rect { y, height: 1, ..inner };
    let [t, g] = Layout::horizontal([Constraint::Length(cols), Constraint::Min(0)]).areas(area);
    f.render_widget(Paragraph::new(text).style(style), t);
    f.render_widget(Sparkline::default().data(series).style(Style::new().fg(Color::Cyan)), g);
}

fn header(f: &mut Frame, inner: Rect, text: String) {
    let area = Rect { height: 1.min(inner.height), ..inner };
    f.render_widget(Paragraph::new(text).style(Style::new().add_modifier(Modifier::BOLD)), area);
}

fn draw_workers(f: &mut Frame, app: &App, area: Rect, lost: &[(usize, i64)]) {
    let block = Block::bordered().title(" workers (per core): rates per second, IN/s over time ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    header(
        f,
        inner,
        format!(
            "{:>6} {:>4} {:>10} {:>10} {:>9} {:>9} {:>8} {:>8} {:>9}",
            "WORKER", "CPU", "IN", "OUT", "REQ", "RESP", "REPLY", "DROP", "UNACCT"
        ),
    );
    let width = inner.width.saturating_sub(WORKER_COLS) as usize;
    let mut tot = [0f64; 6];
    for (i, w) in app.rates.workers.iter().enumerate() {
        let v = [w.rx, w.tx, w.requests, w.responses, w.replies, w.drops];
        for (t, x) in tot.iter_mut().zip(v) {
            *t += x;
        }
        let cpu = w.cpu.map_or_else(|| "-".into(), |c| c.to_string());
        let u = lost.iter().find(|x| x.0 == w.worker).map_or(0, |x| x.1);
        let text = format!(
            "{:>6} {:>4} {:>10.0} {:>10.0} {:>9.0} {:>9.0} {:>8.0} {:>8.0} {:>9}",
            w.worker, cpu, v[0], v[1], v[2], v[3], v[4], v[5], u
        );
        let style = if u != 0 { Style::new().fg(Color::Yellow) } else { Style::new() };
        row(f, inner, i as u16, WORKER_COLS, Line::from(text), &app.history.worker(w.worker, width), style);
    }
    let text = format!(
        "{:>6} {:>4} {:>10.0} {:>10.0} {:>9.0} {:>9.0} {:>8.0} {:>8.0} {:>9}",
        "all",
        "",
        tot[0],
        tot[1],
        tot[2],
        tot[3],
        tot[4],
        tot[5],
        lost.iter().map(|x| x.1).sum::<i64>()
    );
    let style = Style::new().add_modifier(Modifier::BOLD);
    row(f, inner, app.rates.workers.len() as u16, WORKER_COLS, Line::from(text), &[], style);
}

fn draw_backends(f: &mut Frame, app: &App, area: Rect) {
    let title = format!(" backends (sort: {}): REQ/s over time ", app.sort.name());
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    header(
        f,
        inner,
        format!(
            "{:<28} {:<9} {:>9} {:>9} {:>7} {:>12} {:>7}",
            "BACKEND", "STATE", "REQ/s", "RESP/s", "SHARE", "REQUESTS", "RTT_MS"
        ),
    );
    let width = inner.width.saturating_sub(BACKEND_COLS) as usize;
    for (row_no, &i) in app.backend_order().iter().enumerate() {
        let b = &app.now.backends[i];
        let Some(r) = app.rates.backends.get(i) else { continue };
        let rtt = b.probe_rtt_ms.map_or_else(|| "-".into(), |r| format!("{r:.2}"));
        let text = format!(
            "{:<28} {:<9} {:>9.0} {:>9.0} {:>6.1}% {:>12} {:>7}",
            b.addr.to_string(),
            b.state,
            r.requests,
            r.responses,
            r.share,
            b.requests,
            rtt
        );
        let mut style = match b.state.as_str() {
            "down" => Style::new().fg(Color::Red),
            "draining" => Style::new().fg(Color::Yellow),
            _ => Style::new(),
        };
        if row_no == app.selected {
            style = style.add_modifier(Modifier::REVERSED);
        }
        row(f, inner, row_no as u16, BACKEND_COLS, Line::from(text), &app.history.backend(b.addr, width), style);
    }
}

fn reason_list<'a>(title: &'a str, list: &[ReasonRate], bans: Option<u64>) -> Paragraph<'a> {
    // Only the reasons that ever happened: the full list is long.
    let mut lines: Vec<Line> = list
        .iter()
        .filter(|r| r.2 > 0)
        .map(|(name, rate, total)| {
            let style = if *rate > 0.0 { Style::new().fg(Color::Yellow) } else { Style::new() };
            Line::styled(format!("{name:<24} {total:>12} {rate:>9.0}/s"), style)
        })
        .collect();
    if lines.is_empty() {
        lines.push(Line::from("none"));
    }
    if let Some(b) = bans {
        lines.push(Line::from(format!("{:<24} {b:>12}", "bans in force")));
    }
    Paragraph::new(lines).block(Block::bordered().title(title))
}

fn draw_afxdp(f: &mut Frame, app: &App, area: Rect, lost: i64) {
    let Some(a) = &app.now.afxdp else { return };
    let passed: u64 = a.passed.iter().map(|r| r.1).sum();
    let mut lines = vec![
        Line::from(format!(
            "program: seen {}  redirected {}  passed {passed}  shield blocked {}  rate-limited {}  unaccounted {lost}",
            a.seen, a.redirected, a.shield_blocked, a.shield_rate_limited
        )),
        Line::styled(
            format!(
                "{:>6} {:>10} {:>10} {:>12} {:>12} {:>10} {:>8} {:>8} {:>10}",
                "QUEUE", "RX", "TX", "HANDED_OFF", "HANDOFF_FULL", "FILL_EMPTY", "TX_FULL", "CQ_LAG", "KERNEL_DROP"
            ),
            Style::new().add_modifier(Modifier::BOLD),
        ),
    ];
    for q in &a.queues {
        lines.push(Line::from(format!(
            "{:>6} {:>10} {:>10} {:>12} {:>12} {:>10} {:>8} {:>8} {:>10}",
            q.queue,
            q.rx,
            q.tx,
            q.handed_off,
            q.handoff_full,
            q.fill_ring_empty,
            q.tx_ring_full,
            q.completion_lag,
            q.kernel_rx_dropped
        )));
    }
    f.render_widget(Paragraph::new(lines).block(Block::bordered().title(" AF_XDP (totals) ")), area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::snapshot::{Snapshot, WorkerSnapshot};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    /// Everything the screen promises is on it, in a 120x30 terminal.
    #[test]
    fn a_frame_shows_every_section() {
        let w = |rx| WorkerSnapshot {
            worker: 0,
            cpu: Some(1),
            rx_datagrams: rx,
            drops: vec![("malformed".into(), rx / 10)],
            // As `/stats` computes it: nothing forwarded, 10 of 100 dropped.
            unaccounted: (rx - rx / 10) as i64,
            ..Default::default()
        };
        let mut app =
            App::new("127.0.0.1:5070".parse().unwrap(), Snapshot { workers: vec![w(0)], ..Default::default() });
        app.update(
            Snapshot { workers: vec![w(100)], shield_bans: 2, ..Default::default() },
            std::time::Duration::from_secs(1),
        );
        let mut t = Terminal::new(TestBackend::new(120, 30)).unwrap();
        t.draw(|f| draw(f, &app)).unwrap();
        let text: String = t.backend().buffer().content().iter().map(|c| c.symbol()).collect();
        for want in
            ["workers (per core)", "backends (sort: address)", "drops by reason", "malformed", "shield", "d drain"]
        {
            assert!(text.contains(want), "{want:?} missing");
        }
        // Worker 0: 100 in per second, none accounted for but 10 drops.
        assert!(text.contains("       100"), "{text}");
        assert!(text.contains("90"), "unaccounted 90: {text}");
    }
}
