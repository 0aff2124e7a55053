//! baresip (Debian's `baresip-core`, 1.0) as a headless user agent: its own config directory,
//! no audio device (a 440 Hz sine as the source, `aubridge` as a player nobody listens to),
//! G.711, and `ctrl_tcp` for control: commands in, JSON events out (`REGISTER_OK`,
//! `CALL_ESTABLISHED`, `CALL_RTPESTAB`, `CALL_CLOSED`, ...), netstring-framed. Tests wait on
//! those events, never on time.
//!
//! What Debian's build needs to run like this (found by trying): `ausine` only makes 48 kHz
//! stereo, so `ausrc_srate 48000` and `ausrc_channels 2` (baresip resamples for the codec);
//! without a source a call is answered and then dropped with 486. Its standard output is
//! block-buffered into the log file, so nothing waits on it: `audio_debug` gives the RTP
//! counts of a call while it runs.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::netns::NetNs;
use crate::process::ChildGuard;

/// Where Debian puts baresip's modules.
pub const MODULES: &str = "/usr/lib/baresip/modules";
/// ctrl_tcp's port, on the UA's own address.
const CTRL_PORT: u16 = 4444;
/// How long baresip gets to come up and open its control port.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Fails with the package to install when Debian's baresip-core is missing.
pub fn ensure_baresip() -> Result<()> {
    ensure!(
        Path::new("/usr/bin/baresip").is_file() && Path::new(MODULES).join("ctrl_tcp.so").is_file(),
        "baresip is missing (Debian package baresip-core; `cargo xtask setup` installs it)"
    );
    Ok(())
}

/// One baresip process and its control connection. Dropping it stops baresip.
pub struct Baresip {
    pub name: String,
    /// Its SIP address (`sip_listen`).
    pub sip: SocketAddr,
    guard: ChildGuard,
    ctrl: TcpStream,
    buf: Vec<u8>,
    /// Every event received so far, in order.
    events: Vec<Value>,
    token: u64,
}

/// An account line (`accounts` file): `aor` (`sip:user@domain`), every out-of-dialog request
/// through `outbound` (e.g. `sip:10.0.0.1:5060;lr`), and `extra` parameters such as
/// `answermode=auto`.
pub fn account(aor: &str, outbound: &str, extra: &str) -> String {
    format!("<{aor}>;outbound=\"{outbound}\";regint=600;audio_codecs=PCMU;{extra}\n")
}

impl Baresip {
    /// Starts baresip in `ns` with SIP on `sip` (UDP) and the one account `account_line`
    /// (see [`account`]); waits until its control port answers. Config and logs in
    /// `dir/<name>`.
    pub fn start(ns: &NetNs, name: &str, sip: SocketAddr, account_line: &str, dir: &Path) -> Result<Baresip> {
        ensure_baresip()?;
        let home = dir.join(name);
        std::fs::create_dir_all(&home)?;
        let ctrl_addr = SocketAddr::new(sip.ip(), CTRL_PORT);
        std::fs::write(home.join("config"), config(sip, ctrl_addr))?;
        std::fs::write(home.join("accounts"), account_line)?;
        let mut cmd = ns.command(&["baresip", "-f"]);
        cmd.arg(&home);
        let mut guard = ChildGuard::spawn(name, cmd, dir)?;
        guard.set_stop_timeout(Duration::from_secs(3));
        // Polled: the control port opens once baresip has loaded its modules.
        let deadline = Instant::now() + START_TIMEOUT;
        let ctrl = loop {
            guard.ensure_running().context("baresip exited at start")?;
            // The socket is made in the UA's namespace and stays there.
            match crate::nslb::in_ns(ns.name(), || TcpStream::connect_timeout(&ctrl_addr, Duration::from_secs(1)))? {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).context(format!(
                        "baresip {name}: its ctrl_tcp on {ctrl_addr} did not answer within {START_TIMEOUT:?}:\n{}",
                        guard.stdout_tail(20)
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        ctrl.set_nodelay(true)?;
        Ok(Baresip { name: name.to_owned(), sip, guard, ctrl, buf: Vec::new(), events: Vec::new(), token: 0 })
    }

    /// Runs a command (`dial`, `hangup`, ...) and returns its response's `data`; events that
    /// arrive meanwhile are kept.
    pub fn command(&mut self, command: &str, params: &str, within: Duration) -> Result<String> {
        self.token += 1;
        let token = self.token.to_string();
        let body = serde_json::json!({ "command": command, "params": params, "token": token }).to_string();
        self.ctrl.write_all(format!("{}:{body},", body.len()).as_bytes()).context("writing to ctrl_tcp")?;
        let deadline = Instant::now() + within;
        loop {
            let msg = self.next_message(deadline).with_context(|| format!("{}: response to {command}", self.name))?;
            if msg.get("response").is_some() && msg.get("token").and_then(Value::as_str) == Some(&token) {
                let data = msg.get("data").and_then(Value::as_str).unwrap_or("").to_owned();
                ensure!(msg.get("ok") == Some(&Value::Bool(true)), "{}: {command} {params} failed: {msg}", self.name);
                return Ok(data);
            }
        }
    }

    /// Waits until its account is registered (`reginfo` says OK). Polled: a `REGISTER_OK`
    /// event may have gone out before the control connection was made.
    pub fn wait_registered(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let info = self.command("reginfo", "", within)?;
            // `> sip:alice@example.com   OK  <registrar> Expires 600s` (OK in green).
            if info.lines().any(|l| l.contains("sip:") && l.contains("OK ")) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{} not registered within {within:?}: {info:?}\n{}", self.name, self.guard.stdout_tail(10));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the first event of type `kind` not yet taken by an earlier wait, and
    /// returns it.
    pub fn wait_event(&mut self, kind: &str, within: Duration) -> Result<Value> {
        let deadline = Instant::now() + within;
        let mut seen = 0;
        loop {
            if let Some(i) = self.events[seen..].iter().position(|e| e["type"] == kind) {
                return Ok(self.events.remove(seen + i));
            }
            seen = self.events.len();
            self.next_message(deadline).with_context(|| {
                format!("{}: waiting for {kind}; stdout tail:\n{}", self.name, self.guard.stdout_tail(15))
            })?;
        }
    }

    /// Reads one message; an event is also appended to `events`.
    fn next_message(&mut self, deadline: Instant) -> Result<Value> {
        loop {
            if let Some((len, colon)) = netstring_head(&self.buf)? {
                if self.buf.len() > colon + len {
                    ensure!(self.buf[colon + 1 + len] == b',', "ctrl_tcp: netstring without its comma");
                    let msg: Value = serde_json::from_slice(&self.buf[colon + 1..colon + 1 + len])
                        .context("ctrl_tcp: a message that is not JSON")?;
                    self.buf.drain(..colon + 2 + len);
                    if msg.get("event").is_some() {
                        self.events.push(msg.clone());
                    }
                    return Ok(msg);
                }
            }
            self.guard.ensure_running()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("timed out");
            }
            self.ctrl.set_read_timeout(Some(left.min(Duration::from_millis(200))))?;
            let mut chunk = [0u8; 4096];
            match self.ctrl.read(&mut chunk) {
                Ok(0) => bail!("baresip closed its control connection"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) => return Err(e).context("reading ctrl_tcp"),
            }
        }
    }

    /// RTP packets of the current call's audio stream, (sent, received), from the
    /// `audio_debug` command (its RTCP session: `TX: packets=N`, and the peer's `rcvd=N`).
    pub fn rtp_packets(&mut self, within: Duration) -> Result<(u64, u64)> {
        let text = self.command("audio_debug", "", within)?;
        let number_after = |key: &str| -> Option<u64> {
            let at = text.find(key)? + key.len();
            text[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        };
        match (number_after("TX: packets="), number_after("rcvd=")) {
            (Some(sent), Some(received)) => Ok((sent, received)),
            _ => bail!("{}: no RTP counts in audio_debug:\n{text}", self.name),
        }
    }

    /// Waits until the current call has received at least `n` RTP packets; returns the
    /// counts then.
    pub fn wait_rtp_received(&mut self, n: u64, within: Duration) -> Result<(u64, u64)> {
        let deadline = Instant::now() + within;
        loop {
            let counts = self.rtp_packets(within)?;
            if counts.1 >= n {
                return Ok(counts);
            }
            if Instant::now() >= deadline {
                bail!("{}: {} RTP packets received of {n} within {within:?}", self.name, counts.1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `(length, index of the colon)` of the netstring at the start of `buf`, once the colon has
/// arrived.
fn netstring_head(buf: &[u8]) -> Result<Option<(usize, usize)>> {
    let Some(colon) = buf.iter().position(|&b| b == b':') else {
        ensure!(buf.len() < 10 && buf.iter().all(u8::is_ascii_digit), "ctrl_tcp: not a netstring: {buf:?}");
        return Ok(None);
    };
    let len = std::str::from_utf8(&buf[..colon])?.parse().context("ctrl_tcp: netstring length")?;
    Ok(Some((len, colon)))
}

/// baresip's `config`: UDP SIP on `sip`, control on `ctrl`, no audio device.
fn config(sip: SocketAddr, ctrl: SocketAddr) -> String {
    format!(
        "poll_method\t\tepoll\n\
         sip_listen\t\t{sip}\n\
         audio_source\t\tausine,440\n\
         ausrc_srate\t\t48000\n\
         ausrc_channels\t\t2\n\
         auplay_srate\t\t48000\n\
         audio_player\t\taubridge,nil\n\
         audio_alert\t\taubridge,nil\n\
         rtp_stats\t\tyes\n\
         module_path\t\t{MODULES}\n\
         module\t\t\tg711.so\n\
         module\t\t\tausine.so\n\
         module\t\t\taubridge.so\n\
         module_app\t\tuuid.so\n\
         module_app\t\taccount.so\n\
         module_app\t\tmenu.so\n\
         module_app\t\tctrl_tcp.so\n\
         ctrl_tcp_listen\t\t{ctrl}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstring_heads() {
        assert_eq!(netstring_head(b"12").unwrap(), None);
        assert_eq!(netstring_head(b"12:{\"a\"").unwrap(), Some((12, 2)));
        assert!(netstring_head(b"{\"x\":1}").is_err());
    }
}
