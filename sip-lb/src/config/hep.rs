//! The `[hep]` section: mirror every SIP message as HEP v3 to a collector
//! (Homer, heplify-server, sngrep, Kamailio sipcapture). Errors at the line.

use std::net::SocketAddr;

use serde::Deserialize;
use sip_lb_proto::hep::sample::Rate;
use toml::Spanned;

use super::ConfigError;

/// `[hep]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HepConfig {
    /// Where HEP packets go (UDP).
    pub collector: SocketAddr,
    /// Our agent id in every packet (default 2001).
    pub capture_id: u32,
    /// The collector's password, sent in the auth-key chunk.
    pub password: Option<String>,
    /// Which calls are mirrored (`sample`, 0 to 1, default 1: all), by
    /// Call-ID so whole calls are kept or not.
    pub sample: Rate,
}

/// The `capture_id` when none is written (Homer's examples use it).
pub const DEFAULT_CAPTURE_ID: u32 = 2001;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHep {
    collector: Spanned<String>,
    capture_id: Option<u32>,
    password: Option<Spanned<String>>,
    sample: Option<Spanned<f64>>,
}

pub(super) fn parse(src: &str, raw: RawHep) -> Result<HepConfig, ConfigError> {
    let collector = raw.collector.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
        ConfigError::at(
            src,
            Some(raw.collector.span()),
            "hep.collector",
            format!("invalid socket address {:?} (expected ip:port)", raw.collector.get_ref()),
        )
    })?;
    if collector.ip().is_unspecified() || collector.port() == 0 {
        return Err(ConfigError::at(
            src,
            Some(raw.collector.span()),
            "hep.collector",
            "not a usable destination (wildcard ip or port 0)",
        ));
    }
    let sample = match raw.sample {
        Some(s) if !(0.0..=1.0).contains(s.get_ref()) => {
            return Err(ConfigError::at(
                src,
                Some(s.span()),
                "hep.sample",
                format!("{} is outside 0..=1 (the share of calls mirrored)", s.get_ref()),
            ))
        }
        Some(s) => Rate::of(*s.get_ref()),
        None => Rate::ALL,
    };
    let password = match raw.password {
        // The auth-key chunk's length is 16 bits like the packet's.
        Some(p) if p.get_ref().is_empty() || p.get_ref().len() > 1024 => {
            return Err(ConfigError::at(src, Some(p.span()), "hep.password", "must be 1 to 1024 bytes"))
        }
        Some(p) => Some(p.into_inner()),
        None => None,
    };
    Ok(HepConfig { collector, capture_id: raw.capture_id.unwrap_or(DEFAULT_CAPTURE_ID), password, sample })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = "listen = [\"127.0.0.1:5060\"]\n[[pool]]\nname = \"p\"\nbackends = [\"10.0.0.1:5060\"]\n";

    #[test]
    fn parsed_with_defaults_and_errors_at_the_line() {
        let c = Config::from_toml_str(&format!("{BASE}[hep]\ncollector = \"127.0.0.1:9060\"\n")).unwrap();
        let h = c.hep.unwrap();
        assert_eq!(h.collector, "127.0.0.1:9060".parse().unwrap());
        assert_eq!((h.capture_id, h.password, h.sample), (2001, None, sip_lb_proto::hep::sample::Rate::ALL));
        let e = Config::from_toml_str(&format!("{BASE}[hep]\ncollector = \"127.0.0.1:9060\"\nsample = 1.5\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("7:") && e.contains("hep.sample"), "{e}");
        let e = Config::from_toml_str(&format!("{BASE}[hep]\ncollector = \"homer:9060\"\n")).unwrap_err().to_string();
        assert!(e.contains("6:") && e.contains("hep.collector"), "{e}");
    }
}
