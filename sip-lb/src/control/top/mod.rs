//! `sip-lb top`: a live view of a running instance, polled every second
//! from its `/stats`. On a terminal it is a ratatui UI (per-core and
//! per-backend rates with sparklines, drops and shield by reason, AF_XDP
//! counters; keys to sort and to drain or enable a backend); with `--once`,
//! or when stdout is not a terminal, it prints the text table instead,
//! which scripts and tests read.
//! - [`rates`]: per-second rates between two snapshots; [`unaccounted`]:
//!   the leak indicator; [`history`]: the sparklines' points.
//! - [`text`]: the text table; [`app`] + [`draw`]: the terminal UI.
mod app;
mod draw;
mod history;
pub mod rates;
pub mod text;
pub mod unaccounted;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use ratatui::crossterm::event::{self, Event, KeyEvent};
use tokio::sync::mpsc;

use super::client;
pub use text::render;

/// How `top` shows itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The terminal UI when stdout is a terminal, else the text table.
    Auto,
    /// One text table and exit.
    Once,
}

/// Polls `addr` every second until interrupted (or `q` in the UI).
/// `iterations` bounds the number of screens (tests, scripts); `None`
/// runs until interrupted.
pub async fn run(addr: SocketAddr, iterations: Option<u64>, mode: Mode) -> Result<()> {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    match mode {
        Mode::Once => text_loop(addr, Some(1)).await,
        Mode::Auto if tty => tui(addr, iterations).await,
        Mode::Auto => text_loop(addr, iterations).await,
    }
}

/// The text table, one screen per second.
async fn text_loop(addr: SocketAddr, iterations: Option<u64>) -> Result<()> {
    let mut prev = client::stats(addr).await?;
    let mut at = Instant::now();
    let mut n = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let now = client::stats(addr).await?;
        let t = Instant::now();
        println!("{}", render(addr, &prev, &now, t - at));
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        prev = now;
        at = t;
        n += 1;
        if iterations.is_some_and(|max| n >= max) {
            break;
        }
    }
    Ok(())
}

/// Key presses from a thread of their own (crossterm reads block), until
/// the UI drops the receiver.
fn read_keys(tx: mpsc::UnboundedSender<Option<KeyEvent>>) {
    while !tx.is_closed() {
        match event::poll(Duration::from_millis(100)) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(_) => return,
        }
        let sent = match event::read() {
            Ok(Event::Key(k)) => tx.send(Some(k)),
            // A redraw at the new size.
            Ok(Event::Resize(..)) => tx.send(None),
            Ok(_) => Ok(()),
            Err(_) => return,
        };
        if sent.is_err() {
            return;
        }
    }
}

/// The terminal UI. The terminal is restored however it ends.
async fn tui(addr: SocketAddr, iterations: Option<u64>) -> Result<()> {
    // Fails before touching the terminal when nothing answers.
    let first = client::stats(addr).await?;
    let mut app = app::App::new(addr, first);
    let mut terminal = ratatui::try_init()?;
    let (tx, mut keys) = mpsc::unbounded_channel();
    let reader = std::thread::Builder::new().name("top-keys".into()).spawn(move || read_keys(tx))?;
    let result: Result<()> = async {
        let mut at = Instant::now();
        let mut n = 0u64;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            terminal.draw(|f| draw::draw(f, &app))?;
            tokio::select! {
                _ = tick.tick() => {
                    match client::stats(addr).await {
                        Ok(now) => {
                            let t = Instant::now();
                            app.update(now, t - at);
                            at = t;
                        }
                        Err(e) => app.status = format!("{e:#}"),
                    }
                    n += 1;
                    if iterations.is_some_and(|max| n >= max) {
                        terminal.draw(|f| draw::draw(f, &app))?;
                        return Ok(());
                    }
                }
                key = keys.recv() => match key {
                    Some(Some(k)) => match app.key(k) {
                        Some(app::Action::Quit) => return Ok(()),
                        Some(app::Action::Drain(backend, drain)) => {
                            app.status = match client::set_drained(addr, &backend.to_string(), drain).await {
                                Ok(line) => line.trim().to_owned(),
                                Err(e) => format!("{e:#}"),
                            };
                        }
                        None => {}
                    },
                    Some(None) => {}
                    None => return Ok(()),
                },
            }
        }
    }
    .await;
    drop(keys);
    ratatui::restore();
    let _ = reader.join();
    result
}
