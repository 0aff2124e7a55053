//! `sip-lb check-config FILE` and `--log-format json`, run as the binary.
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sip_lb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sip-lb"))
}

#[test]
fn check_config_accepts_the_example_and_names_the_line_of_an_error() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/sip-lb.toml");
    let ok = sip_lb().args(["check-config", example]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(out.contains(": OK (") && out.contains("pool(s)"), "{out}");

    let bad = std::env::temp_dir().join(format!("sip-lb-check-{}.toml", std::process::id()));
    std::fs::write(&bad, "workers = 1\n[[pool]]\nname = \"p\"\nbackends = [\"10.0.0.1:99999\"]\n").unwrap();
    let err = sip_lb().arg("check-config").arg(&bad).output().unwrap();
    std::fs::remove_file(&bad).unwrap();
    assert_eq!(err.status.code(), Some(2));
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(msg.contains(":4:13:") && msg.contains("10.0.0.1:99999"), "{msg}");
    assert!(err.stdout.is_empty());
}

#[test]
fn json_logs_are_one_object_per_line() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let control = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut child = sip_lb()
        .args(["--log-format", "json", "run", "--listen", &port.to_string(), "--backend", "127.0.0.1:9"])
        .args(["--workers", "1", "--pin", "off", "--control", &control.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    // Until the start-up line that says it forwards (or the deadline).
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
        let done = v["fields"]["message"] == "sip-lb forwarding";
        seen.push(v);
        if done {
            break;
        }
    }
    // SIGTERM is handled once the control plane runs (its API answers);
    // before that it ends the process like any other.
    let up = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(control).is_err() && Instant::now() < up {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child by PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(seen.iter().any(|v| v["fields"]["message"] == "sip-lb forwarding"), "{seen:?}");
    assert!(status.success(), "{status:?}");
}
