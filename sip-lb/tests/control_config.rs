//! The `[health]` section and the control address: defaults, parsing of
//! alive codes, and errors that point at the line.
use sip_lb::config::{AliveCodes, Config, ConfigError, HealthConfig, DEFAULT_CONTROL};

const POOL: &str = "[[pool]]\nname = \"p\"\nbackends = [\"10.0.0.1:5060\"]\n";

fn err(src: &str) -> ConfigError {
    match Config::from_toml_str(src) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

#[test]
fn health_defaults() {
    let c = Config::from_toml_str(POOL).unwrap();
    assert_eq!(c.health, HealthConfig::default());
    let h = c.health;
    assert_eq!((h.interval_ms, h.timeout_ms, h.failures, h.successes), (2000, 1000, 3, 2));
    // No [health] section: no probing, every backend counts as healthy.
    assert!(!h.enabled);
    let with_section = Config::from_toml_str(&format!("{POOL}[health]\n")).unwrap().health;
    assert_eq!(with_section, HealthConfig { enabled: true, ..HealthConfig::default() });
    assert!(h.alive.contains(200) && h.alive.contains(299));
    assert!(!h.alive.contains(404) && !h.alive.contains(503) && !h.alive.contains(100));
    assert_eq!(c.metrics, None);
    assert_eq!(DEFAULT_CONTROL.to_string(), "127.0.0.1:5070");
}

#[test]
fn health_section_parses() {
    let c = Config::from_toml_str(&format!(
        "metrics = \"127.0.0.1:9100\"\n{POOL}[health]\nenabled = false\ninterval_ms = 200\ntimeout_ms = 200\nfailures = 2\nsuccesses = 1\nalive_codes = [200, \"4xx\", 501]\n"
    ))
    .unwrap();
    let h = c.health;
    assert_eq!((h.interval_ms, h.timeout_ms, h.failures, h.successes), (200, 200, 2, 1));
    assert!(!h.enabled);
    assert_eq!(h.alive, AliveCodes::class(4).with(200).with(501));
    assert!(h.alive.contains(404) && h.alive.contains(200) && !h.alive.contains(202) && !h.alive.contains(503));
    assert_eq!(c.metrics, Some("127.0.0.1:9100".parse().unwrap()));
    assert_eq!(format!("{:?}", AliveCodes::class(2).with(404)), "[\"2xx\", 404]");
}

#[test]
fn health_errors_point_at_the_line() {
    let e = err(&format!("{POOL}[health]\nalive_codes = [200, \"2yy\"]\n"));
    assert_eq!((e.line(), e.column()), (Some(5), Some(21)), "{e}");
    assert_eq!(e.field(), "health.alive_codes");
    assert!(e.message().contains("\"2yy\" is not a status code"), "{e}");

    let e = err(&format!("{POOL}[health]\nalive_codes = [99]\n"));
    assert_eq!(e.line(), Some(5), "{e}");

    let e = err(&format!("{POOL}[health]\nalive_codes = []\n"));
    assert_eq!(e.line(), Some(5), "{e}");
    assert!(e.message().contains("at least one"), "{e}");

    let e = err(&format!("{POOL}[health]\nsuccesses = 0\n"));
    assert_eq!((e.line(), e.field()), (Some(5), "health.successes"), "{e}");

    let e = err(&format!("{POOL}[health]\ninterval_ms = 100\ntimeout_ms = 500\n"));
    assert_eq!((e.line(), e.field()), (Some(6), "health.timeout_ms"), "{e}");
    assert!(e.message().contains("longer than health.interval_ms"), "{e}");

    let e = err(&format!("{POOL}[health]\nalive = [200]\n"));
    assert!(e.message().contains("unknown field"), "{e}");
}
