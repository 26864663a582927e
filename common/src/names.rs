//! Names people type (datasets, runs, experiments, uploads) are shown on every page and in
//! query strings: one rule for all of them, so a name cannot reorder the text around it
//! (bidirectional overrides such as U+202E), hide itself (zero-width characters) or break a line.

/// Trim `raw` and check it: 1 to `max_chars` characters, none of them control, bidirectional
/// formatting or invisible. `what` names the field in the message ("the dataset name").
pub fn check_display_name(raw: &str, what: &str, max_chars: usize) -> Result<String, String> {
    let name = raw.trim();
    let count = name.chars().count();
    if count == 0 || count > max_chars {
        return Err(format!("{what} must be 1 to {max_chars} characters"));
    }
    if let Some(c) = name.chars().find(|c| is_forbidden(*c)) {
        return Err(format!(
            "{what} must not contain control, bidirectional or invisible characters (found U+{:04X})",
            c as u32
        ));
    }
    Ok(name.to_string())
}

fn is_forbidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}'   // zero-width space/joiners, LRM, RLM
            | '\u{2028}'..='\u{202E}' // line/paragraph separators, LRE RLE PDF LRO RLO
            | '\u{2060}'..='\u{2069}' // word joiner, invisible operators, LRI RLI FSI PDI
            | '\u{061C}'              // Arabic letter mark
            | '\u{FEFF}'              // zero-width no-break space
            | '\u{FFF9}'..='\u{FFFB}') // interlinear annotation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_trimmed() {
        assert_eq!(
            check_display_name("  coco 5% ", "name", 10).unwrap(),
            "coco 5%"
        );
        assert_eq!(check_display_name("数据集", "name", 10).unwrap(), "数据集");
    }

    #[test]
    fn hostile_names_are_refused_by_code_point() {
        for bad in [
            "evil\u{202E}gpj.exe",
            "a\u{200B}b",
            "x\ny",
            "ta\tb",
            "\u{2066}iso",
        ] {
            let err = check_display_name(bad, "the name", 100).unwrap_err();
            assert!(err.contains("U+"), "{bad:?}: {err}");
        }
        assert!(check_display_name("   ", "the name", 100).is_err());
        assert!(check_display_name(&"x".repeat(101), "the name", 100).is_err());
    }
}
