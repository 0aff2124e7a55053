//! The `[shield]` section: block and allow lists, per-source rate limits,
//! scanner User-Agents (docs/shield.md). Parsed here with each error at its
//! entry's line; turned into the core's `ShieldPolicy` by the control plane.

use serde::Deserialize;
use sip_lb_proto::shield::{scanner::DEFAULT_SCANNERS, Prefix, Rate};
use toml::Spanned;

use super::ConfigError;

/// Default reply limit per source: stateless replies (400, 483, ...) are
/// for misbehaving peers; more than this is somebody using us as a reflector.
pub const DEFAULT_REPLY_RATE: Rate = Rate { per_sec: 20, burst: 40 };
/// Sources the shield follows at once, per table (16 bytes each; pages are
/// touched only as sources arrive).
pub const DEFAULT_TRACKED_SOURCES: usize = 16_384;

/// `[shield]`, with its defaults: nothing blocked or limited except stateless
/// replies, and the known scanners dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShieldConfig {
    pub block: Vec<Prefix>,
    pub allow: Vec<Prefix>,
    /// Datagrams per second per source (`rate`, `burst`); `None`: unlimited.
    pub rate: Option<Rate>,
    /// Stateless replies per second per source; `None` (`reply_rate = 0`):
    /// unlimited.
    pub reply_rate: Option<Rate>,
    /// User-Agent fragments of scanners, lower case.
    pub scanners: Vec<String>,
    pub tracked_sources: usize,
    /// How long a banned source stays banned.
    pub ban_seconds: u64,
    /// Ban a source that stays over `rate` this long (0: never).
    pub ban_after_over_rate_seconds: u64,
    /// Ban a source that got this many final 4xx (not 401/407) from the farm
    /// within a minute (0: never).
    pub ban_after_failures: u32,
    /// New sources admitted per second (`new_sources_rate`,
    /// `new_sources_burst`), per receiving CPU by the XDP stage, per worker
    /// without one; `None`: any number (the default).
    pub new_sources: Option<Rate>,
}

/// Default `ban_after_over_rate_seconds`.
pub const DEFAULT_BAN_AFTER_OVER_RATE_SECONDS: u64 = 10;

/// Default `ban_seconds`: long enough that a scanner moves on.
pub const DEFAULT_BAN_SECONDS: u64 = 600;

impl Default for ShieldConfig {
    fn default() -> Self {
        ShieldConfig {
            block: Vec::new(),
            allow: Vec::new(),
            rate: None,
            reply_rate: Some(DEFAULT_REPLY_RATE),
            scanners: DEFAULT_SCANNERS.iter().map(|s| s.to_string()).collect(),
            tracked_sources: DEFAULT_TRACKED_SOURCES,
            ban_seconds: DEFAULT_BAN_SECONDS,
            ban_after_over_rate_seconds: DEFAULT_BAN_AFTER_OVER_RATE_SECONDS,
            ban_after_failures: 0,
            new_sources: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShield {
    #[serde(default)]
    block: Vec<Spanned<String>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    rate: Option<Spanned<u32>>,
    burst: Option<Spanned<u32>>,
    reply_rate: Option<Spanned<u32>>,
    reply_burst: Option<Spanned<u32>>,
    scanners: Option<Vec<Spanned<String>>>,
    tracked_sources: Option<Spanned<usize>>,
    ban_seconds: Option<Spanned<u64>>,
    ban_after_over_rate_seconds: Option<u64>,
    ban_after_failures: Option<u32>,
    new_sources_rate: Option<Spanned<u32>>,
    new_sources_burst: Option<Spanned<u32>>,
}

pub(super) fn parse(src: &str, raw: RawShield) -> Result<ShieldConfig, ConfigError> {
    let prefixes = |list: &[Spanned<String>], field: &str| -> Result<Vec<Prefix>, ConfigError> {
        list.iter()
            .map(|v| Prefix::parse(v.get_ref()).map_err(|m| ConfigError::at(src, Some(v.span()), field, m)))
            .collect()
    };
    let tracked_sources = match raw.tracked_sources {
        Some(n) if !(64..=1 << 24).contains(n.get_ref()) => {
            return Err(ConfigError::at(
                src,
                Some(n.span()),
                "shield.tracked_sources",
                format!("{} is outside 64..=16777216", n.get_ref()),
            ))
        }
        Some(n) => *n.get_ref(),
        None => DEFAULT_TRACKED_SOURCES,
    };
    if let (Some(n), None) = (&raw.new_sources_rate, &raw.rate) {
        return Err(ConfigError::at(
            src,
            Some(n.span()),
            "shield.new_sources_rate",
            "needs `rate`: only sources followed for their rate are known",
        ));
    }
    let mut scanners = Vec::new();
    for s in
        raw.scanners.unwrap_or_else(|| DEFAULT_SCANNERS.iter().map(|s| Spanned::new(0..0, s.to_string())).collect())
    {
        let v = s.get_ref().trim().to_ascii_lowercase();
        if v.is_empty() {
            return Err(ConfigError::at(
                src,
                Some(s.span()),
                "shield.scanners",
                "an empty pattern would match every request",
            ));
        }
        scanners.push(v);
    }
    Ok(ShieldConfig {
        block: prefixes(&raw.block, "shield.block")?,
        allow: prefixes(&raw.allow, "shield.allow")?,
        rate: limit(src, raw.rate, raw.burst, "shield.burst", None)?,
        reply_rate: limit(src, raw.reply_rate, raw.reply_burst, "shield.reply_burst", Some(DEFAULT_REPLY_RATE))?,
        scanners,
        tracked_sources,
        ban_seconds: match raw.ban_seconds {
            Some(b) if *b.get_ref() == 0 => {
                return Err(ConfigError::at(src, Some(b.span()), "shield.ban_seconds", "must be at least 1"))
            }
            Some(b) => *b.get_ref(),
            None => DEFAULT_BAN_SECONDS,
        },
        ban_after_over_rate_seconds: raw.ban_after_over_rate_seconds.unwrap_or(DEFAULT_BAN_AFTER_OVER_RATE_SECONDS),
        ban_after_failures: raw.ban_after_failures.unwrap_or(0),
        new_sources: limit(src, raw.new_sources_rate, raw.new_sources_burst, "shield.new_sources_burst", None)?,
    })
}

/// A rate and its burst: `rate = 0` turns the limit off, a burst defaults to
/// one second's worth, and a burst without a rate adjusts the default (or is
/// an error where there is none).
fn limit(
    src: &str,
    rate: Option<Spanned<u32>>,
    burst: Option<Spanned<u32>>,
    burst_field: &str,
    default: Option<Rate>,
) -> Result<Option<Rate>, ConfigError> {
    let burst_of = |per_sec: u32| burst.as_ref().map_or(per_sec, |b| *b.get_ref()).max(1);
    match (rate.map(|r| *r.get_ref()), default) {
        (Some(0), _) => Ok(None),
        (Some(per_sec), _) => Ok(Some(Rate { per_sec, burst: burst_of(per_sec) })),
        (None, Some(d)) => Ok(Some(Rate { burst: burst.as_ref().map_or(d.burst, |b| *b.get_ref()).max(1), ..d })),
        (None, None) => match burst {
            Some(b) => Err(ConfigError::at(src, Some(b.span()), burst_field, "a burst needs a rate (shield.rate)")),
            None => Ok(None),
        },
    }
}
