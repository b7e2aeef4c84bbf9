//! Request path decoding: the one place a client's raw path becomes a path the gateway
//! reasons about, and where every traversal trick is refused.
//!
//! Static files live in an in-memory map keyed by normalized relative paths, so no request
//! can reach the filesystem at all; this module still rejects the classic forms explicitly
//! (`..`, `%2e%2e`, encoded separators, backslashes, NUL, overlong UTF-8) so they are
//! answered with a clear 400 on every route, including the proxied ones, instead of
//! depending on what some later component happens to do with them.

use std::fmt;

/// Why a raw request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("malformed percent-encoding")]
    BadPercent,
    #[error("encoded path separator")]
    EncodedSeparator,
    #[error("backslash in path")]
    Backslash,
    #[error("NUL or control character in path")]
    Control,
    #[error("path is not valid UTF-8")]
    NotUtf8,
    #[error("'.' or '..' path segment")]
    DotSegment,
}

/// A decoded, validated request path: starts with `/`, valid UTF-8, no dot segments, no
/// separators other than `/`, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanPath(String);

impl CleanPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path relative to a root, with empty segments collapsed: `/a//b/` → `a/b/`
    /// (borrowed when there are none).
    pub fn relative(&self) -> std::borrow::Cow<'_, str> {
        if !self.0.contains("//") {
            return std::borrow::Cow::Borrowed(&self.0[1..]);
        }
        let trailing = self.0.len() > 1 && self.0.ends_with('/');
        let mut rel = self
            .0
            .split('/')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        if trailing && !rel.is_empty() {
            rel.push('/');
        }
        std::borrow::Cow::Owned(rel)
    }

    /// Whether the last segment has a file extension (`app.js`), which is what separates
    /// asset requests from client-side routes (`/projects/42`).
    pub fn has_extension(&self) -> bool {
        let last = self.0.rsplit('/').next().unwrap_or_default();
        match last.rfind('.') {
            Some(i) => i > 0 && i + 1 < last.len(),
            None => false,
        }
    }
}

impl fmt::Display for CleanPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Decode and validate the path part of a request target (no query string).
pub fn decode(raw: &str) -> Result<CleanPath, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let decoded = if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| hex(*c));
            let lo = bytes.get(i + 2).and_then(|c| hex(*c));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::BadPercent);
            };
            i += 3;
            let v = hi << 4 | lo;
            if v == b'/' || v == b'\\' {
                return Err(PathError::EncodedSeparator);
            }
            v
        } else {
            i += 1;
            if b == b'\\' {
                return Err(PathError::Backslash);
            }
            b
        };
        if decoded < 0x20 || decoded == 0x7f {
            return Err(PathError::Control);
        }
        out.push(decoded);
    }
    // Overlong encodings (`%c0%ae` for '.') and every other invalid sequence fail here:
    // Rust's UTF-8 validation accepts only shortest-form encodings.
    let path = String::from_utf8(out).map_err(|_| PathError::NotUtf8)?;
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(PathError::DotSegment);
    }
    Ok(CleanPath(path))
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_forms_are_refused_and_plain_paths_decode() {
        use PathError::*;
        let table: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("/app.css", Ok("/app.css")),
            ("/js/app%20x.js", Ok("/js/app x.js")),
            ("/caf%C3%A9", Ok("/café")),
            ("/../etc/passwd", Err(DotSegment)),
            ("/a/../../etc/passwd", Err(DotSegment)),
            ("/./index.html", Err(DotSegment)),
            ("/%2e%2e/etc/passwd", Err(DotSegment)),
            ("/%2E%2E/etc/passwd", Err(DotSegment)),
            ("/.%2e/etc/passwd", Err(DotSegment)),
            ("/..%2fetc/passwd", Err(EncodedSeparator)),
            ("/%2F..%2Fetc", Err(EncodedSeparator)),
            ("/..%5cetc", Err(EncodedSeparator)),
            ("/..\\etc", Err(Backslash)),
            ("/index.html%00.js", Err(Control)),
            ("/a%0d%0ab", Err(Control)),
            ("/%c0%ae%c0%ae/etc/passwd", Err(NotUtf8)),
            ("/%e0%80%ae", Err(NotUtf8)),
            ("/%ff", Err(NotUtf8)),
            ("/%zz", Err(BadPercent)),
            ("/%2", Err(BadPercent)),
            ("etc/passwd", Err(NotAbsolute)),
            ("/...", Ok("/...")),
            ("/..a", Ok("/..a")),
        ];
        for (raw, want) in table {
            let got = decode(raw);
            match want {
                Ok(p) => assert_eq!(got.as_ref().map(CleanPath::as_str), Ok(*p), "{raw}"),
                Err(e) => assert_eq!(got, Err(*e), "{raw}"),
            }
        }
    }

    #[test]
    fn relative_form_collapses_empty_segments() {
        let rel = |p: &str| {
            decode(p)
                .map(|c| c.relative().into_owned())
                .unwrap_or_default()
        };
        assert_eq!(rel("/"), "");
        assert_eq!(rel("//a///b"), "a/b");
        assert_eq!(rel("/docs/"), "docs/");
    }

    #[test]
    fn extension_is_a_dot_inside_the_last_segment() {
        let ext = |p: &str| decode(p).map(|c| c.has_extension()).unwrap_or_default();
        assert!(ext("/app.js"));
        assert!(ext("/a/b.c.css"));
        assert!(!ext("/projects/42"));
        assert!(!ext("/v1.2/projects"));
        assert!(!ext("/.hidden"));
        assert!(!ext("/trailing."));
    }
}
