//! `${VAR}` substitution from the environment, applied to every string value of the
//! configuration before it is typed, so secrets need not be written into files.
//!
//! `${VAR}` is replaced by the variable's value, `${VAR:-fallback}` uses `fallback` when the
//! variable is unset or empty, and `$${` writes a literal `${`. An unset variable without a
//! fallback, an empty or malformed name, or an unclosed `${` is an error naming the key path.

use super::error::join_key;
use super::ConfigError;

/// Replaces `${VAR}` references in every string of `value`; `key` is the value's key path.
pub fn substitute(
    value: &mut toml::Value,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(text) => {
            if text.contains('$') {
                *text =
                    expand(text, lookup).map_err(|message| ConfigError::invalid(key, message))?;
            }
            Ok(())
        }
        toml::Value::Array(items) => items
            .iter_mut()
            .enumerate()
            .try_for_each(|(i, item)| substitute(item, &join_key(key, &format!("[{i}]")), lookup)),
        toml::Value::Table(table) => table
            .iter_mut()
            .try_for_each(|(name, item)| substitute(item, &join_key(key, name), lookup)),
        _ => Ok(()),
    }
}

fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| "unclosed `${` (write `$${` for a literal `${`)".to_owned())?;
            let reference = &after[..end];
            let (name, fallback) = match reference.split_once(":-") {
                Some((name, fallback)) => (name, Some(fallback)),
                None => (reference, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{reference}}}` is not a valid environment variable reference"
                ));
            }
            match (lookup(name).filter(|v| !v.is_empty()), fallback) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(fallback)) => out.push_str(fallback),
                (None, None) => return Err(format!("environment variable {name} is not set")),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PASSWORD" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_references_fallbacks_and_escapes() {
        assert_eq!(
            expand("postgres://u:${PASSWORD}@h/db", &env).unwrap(),
            "postgres://u:s3cret@h/db"
        );
        assert_eq!(
            expand("${MISSING:-dflt}-${EMPTY:-e}", &env).unwrap(),
            "dflt-e"
        );
        assert_eq!(
            expand("cost $5 and $${LITERAL}", &env).unwrap(),
            "cost $5 and ${LITERAL}"
        );
    }

    #[test]
    fn bad_references_are_errors() {
        assert_eq!(
            expand("${MISSING}", &env).unwrap_err(),
            "environment variable MISSING is not set"
        );
        assert!(expand("${PASSWORD", &env).unwrap_err().contains("unclosed"));
        assert!(expand("${}", &env).unwrap_err().contains("not a valid"));
        assert!(expand("${A-B}", &env).unwrap_err().contains("not a valid"));
    }

    #[test]
    fn errors_carry_the_key_path() {
        let mut value: toml::Value =
            toml::from_str("[[pipeline]]\n[pipeline.source]\nurl = \"${NOPE}\"\n").unwrap();
        let err = substitute(&mut value, "", &env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pipeline[0].source.url: environment variable NOPE is not set"
        );
    }
}
