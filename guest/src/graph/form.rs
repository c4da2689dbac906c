//! `application/x-www-form-urlencoded` bodies for the token endpoint.
//!
//! Every byte outside RFC 3986's unreserved set (`A-Z a-z 0-9 - . _ ~`) is percent-encoded,
//! space included (`%20`, never `+`). So a `+`, `&`, `%`, `=`, `#` or `<` in a password reaches
//! Entra ID unchanged; the incumbent's "special characters in password" failure (AADSTS50126)
//! came from sending such characters raw.

/// Percent-encodes one value (or name) of a form body, UTF-8 byte by byte.
pub fn encode(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len() + value.len() / 2);
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
    out
}

/// Builds a form body from name/value pairs, in order.
pub fn body(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&encode(name));
        out.push('=');
        out.push_str(&encode(value));
    }
    out
}

/// Decodes a form body into pairs (`+` as space, as any form decoder does). Used by tests and
/// by fakes to check what was sent; malformed escapes are kept literally.
pub fn decode(body: &str) -> Vec<(String, String)> {
    fn unescape(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    match std::str::from_utf8(&bytes[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (unescape(n), unescape(v)),
            None => (unescape(p), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_characters_are_encoded() {
        assert_eq!(encode("P@ss&w+rd%! #<"), "P%40ss%26w%2Brd%25%21%20%23%3C");
        assert_eq!(encode("P@ss&w+rd%!"), "P%40ss%26w%2Brd%25%21");
        assert_eq!(encode("*()=;/?:"), "%2A%28%29%3D%3B%2F%3F%3A");
        assert_eq!(encode("Grüße"), "Gr%C3%BC%C3%9Fe");
        assert_eq!(encode("a-b.c_d~e"), "a-b.c_d~e");
    }

    #[test]
    fn body_round_trips_any_password() {
        let pw = "  P@ss&w+rd%! #<\u{e9}=x%zz+ ";
        let b = body(&[("grant_type", "password"), ("password", pw)]);
        assert!(!b.contains(' ') && !b.contains('+'));
        assert_eq!(
            decode(&b),
            vec![
                ("grant_type".to_string(), "password".to_string()),
                ("password".to_string(), pw.to_string())
            ]
        );
    }

    #[test]
    fn decode_tolerates_bad_escapes() {
        assert_eq!(
            decode("a=%zz&b=%4"),
            vec![("a".into(), "%zz".into()), ("b".into(), "%4".into())]
        );
    }
}
