//! BCP 47 language tags, as callers give them.

/// A BCP 47 tag in canonical case (`pt-br` → `pt-BR`, `zh-hant` → `zh-Hant`), or
/// None if it is not one.
pub fn canonical(tag: &str) -> Option<String> {
    if tag.is_empty() || tag.len() > 35 {
        return None;
    }
    let mut out = String::with_capacity(tag.len());
    for (i, sub) in tag.split('-').enumerate() {
        if sub.is_empty() || sub.len() > 8 || !sub.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        if i == 0 {
            if sub.len() < 2 || !sub.bytes().all(|b| b.is_ascii_alphabetic()) {
                return None;
            }
            out.push_str(&sub.to_ascii_lowercase());
            continue;
        }
        out.push('-');
        let alpha = sub.bytes().all(|b| b.is_ascii_alphabetic());
        match sub.len() {
            2 if alpha => out.push_str(&sub.to_ascii_uppercase()),
            4 if alpha => {
                out.push_str(&sub[..1].to_ascii_uppercase());
                out.push_str(&sub[1..].to_ascii_lowercase());
            }
            _ => out.push_str(&sub.to_ascii_lowercase()),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalizes_language_tags() {
        assert_eq!(canonical("pt-br").as_deref(), Some("pt-BR"));
        assert_eq!(canonical("EN").as_deref(), Some("en"));
        assert_eq!(canonical("zh-hant-tw").as_deref(), Some("zh-Hant-TW"));
        assert_eq!(canonical("es-419").as_deref(), Some("es-419"));
        for bad in ["", "e", "en_US", "en-", "1a", "english!", "en-toolongsubtag"] {
            assert_eq!(canonical(bad), None, "{bad}");
        }
    }
}
