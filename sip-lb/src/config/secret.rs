//! `[security]` secrets: written inline or read from a file at load time
//! (and again at every reload, so rotating means editing files and
//! reloading). Error messages never contain a secret's bytes.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::error::ConfigError;

/// The shortest secret accepted.
pub(crate) const MIN_SECRET_LEN: usize = 16;

/// One secret as written: `name = "..."` or `name_file = "/path"`.
pub(crate) struct Source<'a> {
    /// The inline key, e.g. `secret`.
    pub name: &'a str,
    pub inline: Option<Spanned<String>>,
    pub file: Option<Spanned<String>>,
}

/// A secret read, with the key and span of the value that gave it.
pub(crate) struct Loaded {
    pub bytes: Vec<u8>,
    pub key: String,
    pub span: Range<usize>,
}

/// Resolves one secret.
/// A relative file path is relative to `base` (the config file's directory)
/// when given. One trailing `\n` or `\r\n` of a file is not part of the
/// secret.
pub(crate) fn load(src: &str, s: Source<'_>, base: Option<&Path>) -> Result<Option<Loaded>, ConfigError> {
    let field = |key: &str| format!("security.{key}");
    let file_key = format!("{}_file", s.name);
    let (bytes, span, key) = match (s.inline, s.file) {
        (Some(_), Some(f)) => {
            return Err(ConfigError::at(
                src,
                Some(f.span()),
                field(&file_key),
                format!("set either {} or {file_key}, not both", s.name),
            ))
        }
        (None, None) => return Ok(None),
        (Some(v), None) => {
            let span = v.span();
            (v.into_inner().into_bytes(), span, s.name.to_owned())
        }
        (None, Some(f)) => {
            let span = f.span();
            let written = f.into_inner();
            if written.is_empty() {
                return Err(ConfigError::at(src, Some(span), field(&file_key), "must name a file"));
            }
            let path = match base {
                Some(dir) if Path::new(&written).is_relative() => dir.join(&written),
                _ => Path::new(&written).to_path_buf(),
            };
            let mut bytes = std::fs::read(&path).map_err(|e| {
                ConfigError::at(
                    src,
                    Some(span.clone()),
                    field(&file_key),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            if bytes.ends_with(b"\n") {
                bytes.pop();
                if bytes.ends_with(b"\r") {
                    bytes.pop();
                }
            }
            (bytes, span, file_key)
        }
    };
    if bytes.len() < MIN_SECRET_LEN {
        return Err(ConfigError::at(
            src,
            Some(span),
            field(&key),
            format!("the secret is {} bytes; it must be at least {MIN_SECRET_LEN} bytes", bytes.len()),
        ));
    }
    Ok(Some(Loaded { bytes, key, span }))
}
