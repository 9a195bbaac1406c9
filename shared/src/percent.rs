//! Percent-encoding of URL components and header values, and the one
//! decoder every side uses: strict where a bad escape is the caller's error
//! (a path segment, a `/v1/jobs` query value), lenient where the text is
//! only compared or shown (an instance's state directory, a number or
//! instant that fails its own parse when mangled).
//!
//! `+` is never a space: job names and RFC 3339 offsets may hold one.

/// `a b/é` → `a%20b%2F%C3%A9`: every byte but RFC 3986's unreserved ones
/// is escaped, so the server's decoding gives back exactly the name.
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

/// The byte of the escape starting at `b[i]` (`%` and two hex digits).
fn escape_at(b: &[u8], i: usize) -> Option<u8> {
    if b.get(i) != Some(&b'%') {
        return None;
    }
    let hex = b.get(i + 1..i + 3)?;
    // Digits only: `u8::from_str_radix` would also take a sign (`%+1`).
    if !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    std::str::from_utf8(hex)
        .ok()
        .and_then(|h| u8::from_str_radix(h, 16).ok())
}

/// Every escape decoded; a malformed one stays as it is.
pub fn decode_lenient(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match escape_at(b, i) {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// [`decode_lenient`] as text; `s` unchanged when the bytes are not
/// UTF-8, so that it fails as a bad value where it is parsed.
pub fn decode_lenient_str(s: &str) -> String {
    String::from_utf8(decode_lenient(s)).unwrap_or_else(|_| s.to_string())
}

/// Every escape decoded; a malformed escape or bytes that are not UTF-8
/// are an error quoting `s`.
pub fn decode_strict(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let v = escape_at(b, i)
                .ok_or_else(|| format!("{s:?}: '%' not followed by two hex digits"))?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?}: not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_unreserved_bytes_stay() {
        assert_eq!(encode_component("a b/é~-_."), "a%20b%2F%C3%A9~-_.");
    }

    #[test]
    fn strict_refuses_what_lenient_keeps() {
        for (s, why) in [
            ("a%2", "two hex digits"),
            ("%zz", "two hex digits"),
            ("%+1", "two hex digits"),
            ("%", "two hex digits"),
            ("%FF", "not UTF-8"),
        ] {
            let e = decode_strict(s).unwrap_err();
            assert!(e.contains(why) && e.contains(&format!("{s:?}")), "{s}: {e}");
        }
        assert_eq!(decode_lenient("a%2"), b"a%2");
        assert_eq!(decode_lenient("%zz%41"), b"%zzA");
        assert_eq!(decode_lenient("%+1"), b"%+1");
        assert_eq!(decode_lenient("%FF"), [0xFF]);
        assert_eq!(decode_lenient_str("%FF"), "%FF");
        assert_eq!(decode_lenient_str("12%3A00+02%3A00"), "12:00+02:00");
        assert_eq!(decode_strict("a+b%20c%C3%A9").unwrap(), "a+b cé");
    }

    /// An independent reading of the spec, over chars: `%` and two
    /// hex digits is one byte, anything else is itself.
    fn oracle(s: &str) -> Vec<u8> {
        let c: Vec<char> = s.chars().collect();
        let mut out = vec![];
        let mut i = 0;
        while i < c.len() {
            if c[i] == '%'
                && i + 2 < c.len()
                && c[i + 1].is_ascii_hexdigit()
                && c[i + 2].is_ascii_hexdigit()
            {
                out.push(
                    (c[i + 1].to_digit(16).unwrap() * 16 + c[i + 2].to_digit(16).unwrap()) as u8,
                );
                i += 3;
            } else {
                let mut buf = [0; 4];
                out.extend_from_slice(c[i].encode_utf8(&mut buf).as_bytes());
                i += 1;
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_text_survives_encoding(s in "\\PC{0,20}") {
            prop_assert_eq!(decode_strict(&encode_component(&s)).unwrap(), s.clone());
            prop_assert_eq!(decode_lenient_str(&encode_component(&s)), s);
        }

        #[test]
        fn lenient_matches_the_oracle(s in "[%0-9a-fA-Fg+ é]{0,16}") {
            prop_assert_eq!(decode_lenient(&s), oracle(&s));
            if let Ok(t) = decode_strict(&s) {
                prop_assert_eq!(t.into_bytes(), oracle(&s));
            }
        }
    }
}
