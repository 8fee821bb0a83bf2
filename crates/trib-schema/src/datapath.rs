//! Dotted data paths such as `properties.products[0].price`, shared by validation errors and
//! compatibility reports.

/// Appends `.key`, or `["key"]` when the key is not a plain identifier (spaces, dots, quotes,
/// a leading digit), so every path can be read back unambiguously.
pub(crate) fn push_key(path: &mut String, key: &str) {
    if is_identifier(key) {
        path.push('.');
        path.push_str(key);
    } else {
        path.push('[');
        // Serializing a string cannot fail; the fallback keeps the path readable regardless.
        path.push_str(&serde_json::to_string(key).unwrap_or_else(|_| format!("{key:?}")));
        path.push(']');
    }
}

/// Appends `[index]`.
pub(crate) fn push_index(path: &mut String, index: usize) {
    path.push('[');
    path.push_str(&index.to_string());
    path.push(']');
}

/// Returns `base` with `key` appended.
pub(crate) fn with_key(base: &str, key: &str) -> String {
    let mut path = base.to_owned();
    push_key(&mut path, key);
    path
}

fn is_identifier(key: &str) -> bool {
    let mut characters = key.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && characters.all(|character| character.is_ascii_alphanumeric() || character == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_are_not_identifiers_are_quoted() {
        assert_eq!(with_key("properties", "price"), "properties.price");
        assert_eq!(
            with_key("properties", "product_id"),
            "properties.product_id"
        );
        assert_eq!(with_key("traits", "first name"), "traits[\"first name\"]");
        assert_eq!(with_key("traits", "a.b"), "traits[\"a.b\"]");
        assert_eq!(with_key("traits", "2024"), "traits[\"2024\"]");
        assert_eq!(with_key("traits", ""), "traits[\"\"]");
        let mut path = with_key("properties", "products");
        push_index(&mut path, 0);
        push_key(&mut path, "price");
        assert_eq!(path, "properties.products[0].price");
    }
}
