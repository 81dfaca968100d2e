use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value that must never be printed: `Debug`, `Display` and `Serialize` redact it.
/// Read it with [`Secret::expose`] at the one place that needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret.
    pub fn new(v: T) -> Self {
        Secret(v)
    }
    /// The secret itself. Never log the result.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl Secret<String> {
    /// For URLs: user, host, port and database, safe to print (see [`redact_url`]).
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Secret)
    }
}

/// A connection URL as it may be printed: `scheme://user@host:port/database`. The user-info's
/// password and the whole query (which may hold `password=`) are never shown.
///
/// Works whatever the password holds, percent-encoded or not: when the authority has no `@`,
/// everything before the URL's last `@` is user-info, and only its user name (up to the first
/// `:`, `/`, `?`, `#` or `@`) is kept. A string that is not a URL is not shown at all.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "(not a URL; not shown)".to_string();
    };
    let scheme = &url[..scheme_end];
    let mut rest = &url[scheme_end + 3..];
    let mut user = "";
    // The standard reading first: user-info is what precedes an `@` inside the authority (up to
    // the first `/`, `?` or `#`). When the authority holds no `@`, a raw password may contain
    // those delimiters: then everything before the last `@` is taken as user-info.
    let authority = rest.find(['/', '?', '#']).map_or(rest, |end| &rest[..end]);
    let at = match authority.rfind('@') {
        Some(at) => Some(at),
        None => rest.rfind('@'),
    };
    if let Some(at) = at {
        let info = &rest[..at];
        user = info.find([':', '/', '?', '#', '@']).map_or(info, |end| &info[..end]);
        rest = &rest[at + 1..];
    }
    let location = rest.find(['?', '#']).map_or(rest, |end| &rest[..end]);
    if user.is_empty() {
        format!("{scheme}://{location}")
    } else {
        format!("{scheme}://{user}@{location}")
    }
}

/// `%XX` escapes in a URL component decoded (an invalid escape is kept as written).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_password_is_ever_shown() {
        let secret = "pa/ss?w@rd#x:y%2F";
        for url in [
            format!("postgres://app:{secret}@db.example:5433/orders?sslmode=require"),
            format!("postgres://app:{secret}@db.example/orders"),
            format!("postgresql://app:{secret}@db.example"),
            format!("postgres://app@db.example/orders?password={secret}&sslmode=require"),
            format!("postgres://db.example/orders?user=app&password={secret}"),
            format!("postgres://app:{}@db.example:5433/orders", "p%40ss%2Fw%3Frd"),
        ] {
            let shown = redact_url(&url);
            for piece in ["pa/ss", "ss?w", "rd#x", "p%40ss", "w%3F", "password"] {
                assert!(!shown.contains(piece), "{url} -> {shown}");
            }
            if !url.contains("?user=") {
                assert!(shown.contains("@db.example"), "{url} -> {shown}");
            }
        }
        assert_eq!(
            redact_url(&format!("postgres://app:{secret}@db.example:5433/orders?sslmode=require")),
            "postgres://app@db.example:5433/orders"
        );
        assert_eq!(redact_url("postgres://db.example/orders"), "postgres://db.example/orders");
        assert_eq!(redact_url("host=x password=y"), "(not a URL; not shown)");
    }
}
