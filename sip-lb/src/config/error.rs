//! Configuration errors that say where: `file:line:col: field: what`.

use std::fmt;
use std::ops::Range;

/// A configuration error, displayed as
/// `config.toml:7:12: pool "registrars": backend "10.0.0.x:5060": invalid socket address ...`.
///
/// The file is known only when the text came from a file (`Config::load`);
/// the position only when the error can be pinned to a span of the text;
/// `field` is the path of the offending setting (`workers`,
/// `pool "registrars": methods`, or a flag such as `--advertise`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    file: Option<String>,
    position: Option<(usize, usize)>,
    field: String,
    message: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { file: None, position: None, field: field.into(), message: message.into() }
    }

    /// An error at `span` (byte offsets) of `src`.
    pub(crate) fn at(
        src: &str,
        span: Option<Range<usize>>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let mut e = Self::new(field, message);
        e.position = span.map(|s| line_col(src, s.start));
        e
    }

    pub(crate) fn in_file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }

    /// The file the text was read from, if any.
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// 1-based line, if the error could be located in the text.
    pub fn line(&self) -> Option<usize> {
        self.position.map(|p| p.0)
    }

    /// 1-based column (in characters), if the error could be located.
    pub fn column(&self) -> Option<usize> {
        self.position.map(|p| p.1)
    }

    /// The setting at fault: a field path, or a command-line flag.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.position) {
            (Some(file), Some((l, c))) => write!(f, "{file}:{l}:{c}: ")?,
            (Some(file), None) => write!(f, "{file}: ")?,
            (None, Some((l, c))) => write!(f, "{l}:{c}: ")?,
            (None, None) => {}
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// 1-based (line, column) of byte `offset` in `src`; the column counts chars.
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let src = "a = 1\nbb = \"é\"x\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 4), (1, 5));
        assert_eq!(line_col(src, 6), (2, 1));
        // 'x' is the 9th char of its line, though byte 10 (two-byte 'é').
        let x = src.find('x').unwrap();
        assert_eq!(line_col(src, x), (2, 9));
        assert_eq!(line_col(src, 999), (3, 1));
    }

    #[test]
    fn display_forms() {
        let e = ConfigError::at("\n\nabc", Some(2..3), "workers", "must be at least 1");
        assert_eq!(e.to_string(), "3:1: workers: must be at least 1");
        assert_eq!(e.clone().in_file("sip-lb.toml").to_string(), "sip-lb.toml:3:1: workers: must be at least 1");
        assert_eq!(ConfigError::new("--advertise", "x").to_string(), "--advertise: x");
    }
}
