//! The flat subset of TOML the appliance's own files use (`key =
//! "string"`, `key = 123`, `key = true`, `#` comments, `[table]` lines
//! skipped): the config file, `applianced.state`, `run/appliance.pid`, the
//! lane status files, the quarantine `.meta` files.

use std::collections::BTreeMap;
use std::fmt;

/// A line that is not `key = value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based.
    pub line: usize,
    pub text: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: expected key = \"value\", a number or true/false: {}", self.line, self.text)
    }
}

impl std::error::Error for SyntaxError {}

/// Parse `key = "string"`, `key = 123` and `key = true|false` lines (and
/// `#` comments) into pairs, without judging the keys. The config file,
/// `applianced.state`, `run/appliance.pid` and the lane status files all
/// use this format.
pub fn parse_pairs(text: &str) -> Result<BTreeMap<String, String>, SyntaxError> {
    let mut pairs = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.split_once(" #").map_or(line, |(l, _)| l).trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        let syntax = || SyntaxError { line: index + 1, text: line.to_string() };
        let (key, value) = line.split_once('=').ok_or_else(syntax)?;
        let value = value.trim();
        let value = match value.strip_prefix('"') {
            Some(rest) => rest.strip_suffix('"').ok_or_else(syntax)?.to_string(),
            None if value.chars().all(|c| c.is_ascii_digit()) && !value.is_empty() => value.to_string(),
            None if value == "true" || value == "false" => value.to_string(),
            None => return Err(syntax()),
        };
        pairs.insert(key.trim().to_string(), value);
    }
    Ok(pairs)
}
