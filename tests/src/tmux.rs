//! A terminal for tests of terminal UIs: a tmux server of our own (its own
//! socket, `-L`), one detached session of a fixed size running a command,
//! keys sent with `send-keys` and the screen read with `capture-pane`. The
//! server (and so the command) is killed on drop.
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::netns::run;

pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// `cmd` (a shell command line) in a `cols` x `rows` pane that stays
    /// readable after the command exits (`remain-on-exit`).
    pub fn start(label: &str, cols: u16, rows: u16, cmd: &str) -> Result<Tmux> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let socket = format!("{label}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let t = Tmux { socket };
        // The server starts with the session; the option is set before the
        // command can exit because the session is created without it first.
        let (c, r) = (cols.to_string(), rows.to_string());
        t.tmux(&["-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", &c, "-y", &r, "sleep 600"])?;
        t.tmux(&["set-option", "-g", "remain-on-exit", "on"])?;
        t.tmux(&["respawn-pane", "-k", "-t", "t", cmd])?;
        Ok(t)
    }

    fn tmux(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]).args(args).env("TERM", "xterm-256color");
        let out = run(&mut c)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The visible screen, one line per row.
    pub fn screen(&self) -> Result<String> {
        self.tmux(&["capture-pane", "-p", "-t", "t"])
    }

    /// `send-keys` with tmux key names (`Down`, `q`, `C-c`).
    pub fn keys(&self, keys: &[&str]) -> Result<()> {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.tmux(&args).map(drop)
    }

    /// Polls the screen every 20 ms until `done` holds; returns that screen.
    pub fn wait(&self, within: Duration, what: &str, mut done: impl FnMut(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + within;
        loop {
            let s = self.screen()?;
            if done(&s) {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                bail!("{what}: not on the screen within {within:?}; the screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output();
        // kill-server leaves the socket file behind: $TMUX_TMPDIR/tmux-UID/NAME.
        let dir = std::env::var_os("TMUX_TMPDIR").unwrap_or_else(|| "/tmp".into());
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let _ = std::fs::remove_file(std::path::Path::new(&dir).join(format!("tmux-{uid}")).join(&self.socket));
    }
}
