//! What a child id and a plugin name may look like. Ids end up in URLs, log
//! lines and database keys, plugin names in file names, so both are kept to a
//! small, printable alphabet.

/// The longest child id.
pub const MAX_ID_LEN: usize = 128;
/// The longest plugin name.
pub const MAX_PLUGIN_LEN: usize = 64;

/// Child ids: 1 to 128 characters from `A-Z a-z 0-9 _ - . : @`, never `..`.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the id is empty".into());
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!("the id is longer than {MAX_ID_LEN} bytes"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@')))
    {
        return Err(format!(
            "the id contains {c:?}; allowed are letters, digits and _ - . : @"
        ));
    }
    if id.contains("..") {
        return Err("the id contains \"..\"".into());
    }
    Ok(())
}

/// Plugin names: 1 to 64 characters from `A-Z a-z 0-9 _ -`.
pub fn validate_plugin(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the plugin name is empty".into());
    }
    if name.len() > MAX_PLUGIN_LEN {
        return Err(format!(
            "the plugin name is longer than {MAX_PLUGIN_LEN} bytes"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
    {
        return Err(format!(
            "the plugin name contains {c:?}; allowed are letters, digits, _ and -"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["t1", "group:general", "txn_1", "a.b-c@d", &"x".repeat(128)] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a/b",
            "..",
            "a..b",
            "a b",
            "a\nb",
            "é",
            "a\\b",
            &"x".repeat(129),
        ] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plugin_names() {
        assert!(validate_plugin("board_monitor").is_ok());
        assert!(validate_plugin("my-plugin2").is_ok());
        for bad in ["", "a.b", "a/b", "../x", "a:b", &"p".repeat(65)] {
            assert!(validate_plugin(bad).is_err(), "{bad:?}");
        }
    }
}
