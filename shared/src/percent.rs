//! Percent-encoding of one URL component (a job name in a path segment or
//! a query value): every byte but RFC 3986's unreserved ones is escaped, so
//! the server's decoding gives back exactly the name.

/// `a b/é` → `a%20b%2F%C3%A9`.
pub fn encode_component(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_unreserved_bytes_stay() {
        assert_eq!(super::encode_component("a b/é~-_."), "a%20b%2F%C3%A9~-_.");
    }
}
