//! Key tables: the key names the model may use, mapped to what `Input.dispatchKeyEvent` needs.

/// The DOM `key` value for a key name.
pub(super) fn key_name(key: &str) -> String {
    match key.to_ascii_lowercase().as_str() {
        "enter" | "return" => "Enter".into(),
        "esc" | "escape" => "Escape".into(),
        "space" => " ".into(),
        _ => key.to_string(),
    }
}

/// (code, virtual key code, text) for a key name.
pub(super) fn key_info(key: &str) -> Option<(String, i64, Option<String>)> {
    let k = key.to_ascii_lowercase();
    let named =
        |code: &str, vk: i64, text: Option<&str>| Some((code.to_string(), vk, text.map(str::to_string)));
    match k.as_str() {
        "enter" | "return" => named("Enter", 13, Some("\r")),
        "tab" => named("Tab", 9, None),
        "escape" | "esc" => named("Escape", 27, None),
        "backspace" => named("Backspace", 8, None),
        "delete" => named("Delete", 46, None),
        "space" | " " => named("Space", 32, Some(" ")),
        "arrowdown" | "down" => named("ArrowDown", 40, None),
        "arrowup" | "up" => named("ArrowUp", 38, None),
        "arrowleft" | "left" => named("ArrowLeft", 37, None),
        "arrowright" | "right" => named("ArrowRight", 39, None),
        "pagedown" => named("PageDown", 34, None),
        "pageup" => named("PageUp", 33, None),
        "home" => named("Home", 36, None),
        "end" => named("End", 35, None),
        _ => {
            let mut chars = key.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if c.is_ascii_alphanumeric() => {
                    let up = c.to_ascii_uppercase();
                    let code = if c.is_ascii_digit() {
                        format!("Digit{c}")
                    } else {
                        format!("Key{up}")
                    };
                    Some((code, i64::from(up as u8), Some(c.to_string())))
                }
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_keys_letters_and_digits_map_to_codes_and_unknown_names_do_not() {
        assert_eq!(key_info("Enter"), Some(("Enter".into(), 13, Some("\r".into()))));
        assert_eq!(key_info("down"), Some(("ArrowDown".into(), 40, None)));
        assert_eq!(key_info("a"), Some(("KeyA".into(), 65, Some("a".into()))));
        assert_eq!(key_info("7"), Some(("Digit7".into(), 55, Some("7".into()))));
        assert_eq!(key_info("Hyper"), None);
        assert_eq!(key_info("é"), None);
        assert_eq!(key_name("esc"), "Escape");
        assert_eq!(key_name("space"), " ");
        assert_eq!(key_name("Tab"), "Tab");
    }
}
