//! The static asset store: `static.root` read into memory once at start, with gzip and
//! brotli variants precomputed for compressible types, and the pure decision of what to
//! answer a static request with (variant negotiation, ETag revalidation, cache policy,
//! SPA fallback, 404s).
//!
//! Serving from a map keyed by normalized relative paths means no request ever touches the
//! filesystem, so path traversal cannot reach files outside the root; loading skips
//! symlinks and dotfiles for the same reason. Compression happens once at load, never per
//! request, which is what lets the gateway outrun a general-purpose server on static files.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use pingora::http::ResponseHeader;
use sha2::{Digest, Sha256};

use crate::path::CleanPath;
use crate::respond;

/// Files larger than this are served as is: precompressing them would cost start-up time
/// and memory for what is, in this app, never a text asset.
const MAX_COMPRESS_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("static root {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("static root {0} has no index.html")]
    NoIndex(PathBuf),
    #[error("compressing {path}: {source}")]
    Compress {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: cannot build its response headers: {message}")]
    Header { path: String, message: String },
}

/// A content coding the store can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Brotli,
}

impl Encoding {
    /// The `Content-Encoding` token, and the metric label.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
        }
    }
}

/// One encoded form of a file.
#[derive(Debug)]
pub struct Variant {
    pub encoding: Encoding,
    pub body: Bytes,
    /// Strong ETag of exactly these bytes (variants differ, so their tags do too).
    pub etag: String,
    /// Its complete response heads, built once at load: serving a file over HTTP/1 then
    /// copies ready bytes, over HTTP/2 clones ready header values.
    heads: Heads,
}

/// `[plain, tls]` (only TLS carries HSTS) for a 200 and for a 304.
#[derive(Debug)]
struct Heads {
    ok: [Head; 2],
    not_modified: [Head; 2],
}

/// One response head, for both protocols.
#[derive(Debug)]
pub struct Head {
    pub header: ResponseHeader,
    /// `header` in HTTP/1.1 wire form ([`respond::h1_lines`]).
    pub h1: Bytes,
}

impl Head {
    fn new(header: ResponseHeader) -> Head {
        let mut h1 = bytes::BytesMut::with_capacity(512);
        respond::h1_lines(&header, &mut h1);
        Head {
            header,
            h1: h1.freeze(),
        }
    }
}

impl Heads {
    fn build(asset: &AssetHead<'_>, variant: &Encoded) -> pingora::Result<Heads> {
        let head = |status: u16, tls: bool| -> pingora::Result<Head> {
            let mut header = respond::header(status, tls)?;
            header.insert_header("content-type", asset.content_type)?;
            header.insert_header("cache-control", asset.cache_control)?;
            header.insert_header("etag", variant.etag.as_str())?;
            if asset.negotiable {
                header.insert_header("vary", "Accept-Encoding")?;
            }
            if let Some(link) = asset.link {
                header.insert_header("link", link)?;
            }
            if variant.encoding != Encoding::Identity {
                header.insert_header("content-encoding", variant.encoding.token())?;
            }
            if status == 200 {
                header.insert_header("content-length", variant.body.len().to_string())?;
            }
            Ok(Head::new(header))
        };
        Ok(Heads {
            ok: [head(200, false)?, head(200, true)?],
            not_modified: [head(304, false)?, head(304, true)?],
        })
    }
}

/// What every variant of one file says about it.
struct AssetHead<'a> {
    content_type: &'a str,
    cache_control: &'a str,
    negotiable: bool,
    /// A `Link` header: what the browser should fetch as soon as it has the head.
    link: Option<&'static str>,
}

/// The web app's entry page (also the SPA fallback) has the browser fetch `/config.json`
/// with the page's own modules instead of after them; in the shape the app's `fetch()`
/// of it matches (CORS mode, same-origin credentials). A header rather than a tag in the
/// page, so a copy opened from `file://` (the desktop app) asks for nothing.
const ENTRY_LINK: &str = "</config.json>; rel=preload; as=fetch; crossorigin=anonymous";

/// A variant before its heads are built (they depend on how many variants there are).
struct Encoded {
    encoding: Encoding,
    body: Bytes,
    etag: String,
}

/// A file of the web app.
#[derive(Debug)]
pub struct Asset {
    pub content_type: String,
    pub cache_control: &'static str,
    /// Identity first, then the compressed variants that turned out smaller.
    pub variants: Vec<Variant>,
}

impl Asset {
    fn pick(&self, accept_encoding: Option<&str>) -> &Variant {
        let wanted = negotiate(accept_encoding);
        wanted
            .iter()
            .find_map(|enc| self.variants.iter().find(|v| v.encoding == *enc))
            .unwrap_or(&self.variants[0])
    }
}

/// The loaded web app.
#[derive(Debug)]
pub struct Store {
    files: HashMap<String, Arc<Asset>>,
    index: Arc<Asset>,
    version: String,
}

/// What a static request carries that matters to the answer.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a Method,
    /// Whether the request came over TLS (HSTS is only sent there).
    pub tls: bool,
    pub path: &'a CleanPath,
    pub accept: Option<&'a str>,
    pub accept_encoding: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
}

/// What the store answers a static request: a complete response, security headers
/// included.
pub enum Answer<'s> {
    /// A file: its prebuilt head and its body (empty for `HEAD` and 304).
    File {
        head: &'s Head,
        body: Bytes,
        encoding: Encoding,
    },
    /// An error the store words (404, 405).
    Made(Box<respond::Reply>),
}

impl Answer<'_> {
    pub fn header(&self) -> &ResponseHeader {
        match self {
            Answer::File { head, .. } => &head.header,
            Answer::Made(reply) => &reply.header,
        }
    }

    pub fn status(&self) -> u16 {
        self.header().status.as_u16()
    }

    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.header().headers.get(name)?.to_str().ok()
    }

    pub fn encoding(&self) -> Option<Encoding> {
        match self {
            Answer::File { encoding, .. } => Some(*encoding),
            Answer::Made(_) => None,
        }
    }

    pub fn body(&self) -> &Bytes {
        match self {
            Answer::File { body, .. } => body,
            Answer::Made(reply) => &reply.body,
        }
    }

    /// An owned reply (HTTP/2: Pingora takes the header).
    pub fn into_reply(self) -> respond::Reply {
        match self {
            Answer::File { head, body, .. } => respond::Reply {
                header: head.header.clone(),
                body,
            },
            Answer::Made(reply) => *reply,
        }
    }
}

impl Store {
    /// Read every regular, non-hidden file under `root` and precompress the compressible
    /// ones. `index.html` must exist: it is the SPA's entry point.
    pub fn load(root: &Path) -> Result<Store, AssetError> {
        let mut files = HashMap::new();
        walk(root, root, &mut files)?;
        let index = files
            .get("index.html")
            .cloned()
            .ok_or_else(|| AssetError::NoIndex(root.to_path_buf()))?;
        let version = version_of(&files);
        Ok(Store {
            files,
            index,
            version,
        })
    }

    /// A digest of every file's path and content: it changes whenever any file of the
    /// web app does. The web app's service worker is registered under it
    /// (`/config.json`'s `assetsVersion`), so a new deployment is a new worker.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Answer a static request.
    pub fn serve(&self, req: Request<'_>) -> pingora::Result<Answer<'_>> {
        if req.method != Method::GET && req.method != Method::HEAD {
            let mut reply = respond::error(
                405,
                "method_not_allowed",
                "static files answer GET and HEAD only",
                req.tls,
            )?;
            reply.header.insert_header("allow", "GET, HEAD")?;
            return Ok(Answer::Made(Box::new(reply)));
        }
        let rel = req.path.relative();
        let key = if rel.is_empty() || rel.ends_with('/') {
            std::borrow::Cow::Owned(format!("{rel}index.html"))
        } else {
            rel
        };
        let asset = match self.files.get(key.as_ref()) {
            Some(asset) => asset,
            None if is_navigation(&req) => &self.index,
            None => {
                let reply = respond::error(404, "not_found", "no such file", req.tls)?;
                return Ok(Answer::Made(Box::new(reply)));
            }
        };
        Ok(self.answer(asset, &req))
    }

    fn answer<'s>(&self, asset: &'s Asset, req: &Request<'_>) -> Answer<'s> {
        let variant = asset.pick(req.accept_encoding);
        let not_modified = req
            .if_none_match
            .is_some_and(|inm| etag_matches(inm, &variant.etag));
        let heads = if not_modified {
            &variant.heads.not_modified
        } else {
            &variant.heads.ok
        };
        let body = if not_modified || req.method == Method::HEAD {
            Bytes::new()
        } else {
            variant.body.clone()
        };
        Answer::File {
            head: &heads[usize::from(req.tls)],
            body,
            encoding: variant.encoding,
        }
    }
}

/// A browser navigation the SPA should handle: GET/HEAD, accepting HTML, and a path
/// without a file extension. A missing `app.js` is a 404, never the HTML shell (which the
/// browser would then try to run as script).
fn is_navigation(req: &Request<'_>) -> bool {
    (req.method == Method::GET || req.method == Method::HEAD)
        && req.accept.is_some_and(|a| a.contains("text/html"))
        && !req.path.has_extension()
}

/// Preferred encodings in order, from `Accept-Encoding`; brotli beats gzip when both are
/// acceptable because it is smaller. Identity is always the fallback.
pub fn negotiate(accept_encoding: Option<&str>) -> Vec<Encoding> {
    let mut br = None;
    let mut gzip = None;
    let mut star = None;
    for item in accept_encoding.unwrap_or_default().split(',') {
        let mut parts = item.split(';');
        let token = parts.next().unwrap_or_default().trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .filter_map(|v| v.trim().parse::<f32>().ok())
            .next()
            .unwrap_or(1.0);
        let is = |name: &str| token.eq_ignore_ascii_case(name);
        if is("br") {
            br = Some(q);
        } else if is("gzip") || is("x-gzip") {
            gzip = Some(q);
        } else if token == "*" {
            star = Some(q);
        }
    }
    let acceptable = |q: Option<f32>| q.or(star).is_some_and(|q| q > 0.0);
    let mut out = Vec::with_capacity(3);
    if acceptable(br) {
        out.push(Encoding::Brotli);
    }
    if acceptable(gzip) {
        out.push(Encoding::Gzip);
    }
    out.push(Encoding::Identity);
    out
}

/// `If-None-Match` uses weak comparison (RFC 9110 §13.1.2): `W/` prefixes are ignored.
fn version_of(files: &HashMap<String, Arc<Asset>>) -> String {
    let mut paths: Vec<&String> = files.keys().collect();
    paths.sort();
    let mut digest = Sha256::new();
    for path in paths {
        digest.update(path.as_bytes());
        digest.update([0]);
        // The identity variant's tag is the hash of the file's content.
        digest.update(files[path].variants[0].etag.as_bytes());
        digest.update([0]);
    }
    hex::encode(&digest.finalize()[..8])
}

fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

fn walk(
    root: &Path,
    dir: &Path,
    files: &mut HashMap<String, Arc<Asset>>,
) -> Result<(), AssetError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AssetError::Read { path, source }
    };
    let entries = std::fs::read_dir(dir).map_err(read_err(dir))?;
    for entry in entries {
        let entry = entry.map_err(read_err(dir))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        // symlink_metadata: a link is neither followed nor served, so nothing outside the
        // root can be pulled in.
        let meta = std::fs::symlink_metadata(&path).map_err(read_err(&path))?;
        if meta.is_dir() {
            walk(root, &path, files)?;
        } else if meta.is_file() {
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let Some(key) = rel.to_str().map(|s| s.replace('\\', "/")) else {
                continue;
            };
            let data = std::fs::read(&path).map_err(read_err(&path))?;
            files.insert(key.clone(), Arc::new(build(&key, data)?));
        }
    }
    Ok(())
}

fn build(key: &str, data: Vec<u8>) -> Result<Asset, AssetError> {
    let mime = mime_guess::from_path(key).first_or_octet_stream();
    let essence = mime.essence_str().to_string();
    let content_type = if needs_charset(&essence) {
        format!("{essence}; charset=utf-8")
    } else {
        essence.clone()
    };
    let file_name = key.rsplit('/').next().unwrap_or(key);
    let cache_control = if is_fingerprinted(file_name) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let hash = hex::encode(&Sha256::digest(&data)[..8]);
    let identity = Bytes::from(data);
    let mut encoded = vec![Encoded {
        encoding: Encoding::Identity,
        body: identity.clone(),
        etag: format!("\"{hash}\""),
    }];
    if is_compressible(&essence) && identity.len() <= MAX_COMPRESS_BYTES {
        let compress_err = |source| AssetError::Compress {
            path: key.to_string(),
            source,
        };
        let br = brotli(&identity).map_err(compress_err)?;
        if br.len() < identity.len() {
            encoded.push(Encoded {
                encoding: Encoding::Brotli,
                body: Bytes::from(br),
                etag: format!("\"{hash}-br\""),
            });
        }
        let gz = gzip(&identity).map_err(compress_err)?;
        if gz.len() < identity.len() {
            encoded.push(Encoded {
                encoding: Encoding::Gzip,
                body: Bytes::from(gz),
                etag: format!("\"{hash}-gz\""),
            });
        }
    }
    let asset = AssetHead {
        content_type: &content_type,
        cache_control,
        negotiable: encoded.len() > 1,
        link: (key == "index.html").then_some(ENTRY_LINK),
    };
    let variants = encoded
        .into_iter()
        .map(|v| {
            let heads = Heads::build(&asset, &v).map_err(|e| AssetError::Header {
                path: key.to_string(),
                message: e.to_string(),
            })?;
            Ok(Variant {
                encoding: v.encoding,
                body: v.body,
                etag: v.etag,
                heads,
            })
        })
        .collect::<Result<Vec<_>, AssetError>>()?;
    Ok(Asset {
        content_type,
        cache_control,
        variants,
    })
}

fn needs_charset(essence: &str) -> bool {
    essence.starts_with("text/")
        || essence == "application/javascript"
        || essence == "application/json"
}

fn is_compressible(essence: &str) -> bool {
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence,
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "application/wasm"
                | "image/svg+xml"
                | "image/x-icon"
                | "image/vnd.microsoft.icon"
                | "font/ttf"
                | "font/otf"
        )
}

/// `name.<hash>.ext`: a segment of at least 8 alphanumerics with a digit in it, just before
/// the extension. Such a name changes whenever the content does, so it may be cached
/// forever.
pub fn is_fingerprinted(file_name: &str) -> bool {
    let parts: Vec<&str> = file_name.split('.').collect();
    if parts.len() < 3 || parts[0].is_empty() {
        return false;
    }
    let hash = parts[parts.len() - 2];
    hash.len() >= 8
        && hash.chars().all(|c| c.is_ascii_alphanumeric())
        && hash.chars().any(|c| c.is_ascii_digit())
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data)?;
    enc.finish()
}

fn brotli(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = brotli::CompressorWriter::new(&mut out, 4096, 11, 22);
        enc.write_all(data)?;
        enc.flush()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::decode;

    fn store() -> Store {
        store_with("function hello() { return 'world'; }\n")
    }

    /// The test store, its `js/app.js` made of `line` repeated.
    fn store_with(line: &str) -> Store {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("btp-assets-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("js")).unwrap_or_default();
        let big_js = line.repeat(200);
        for (name, body) in [
            ("index.html", "<!doctype html><title>x</title>".repeat(20)),
            ("js/app.js", big_js.clone()),
            ("js/app.3f2a9c1b.js", big_js),
            (".secret", "no".into()),
            ("logo.png", "\u{89}PNG".into()),
        ] {
            std::fs::write(dir.join(name), body).unwrap_or_default();
        }
        let store = Store::load(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        store.unwrap_or_else(|e| panic!("load: {e}"))
    }

    #[test]
    fn the_version_follows_the_content_of_every_file() {
        let (a, b) = (store(), store());
        assert_eq!(a.version(), b.version(), "same files, same version");
        assert_eq!(a.version().len(), 16);
        let changed = store_with("function hello() { return 'monde'; }\n");
        assert_ne!(a.version(), changed.version());
    }

    fn get<'a>(path: &'a CleanPath, accept: Option<&'a str>, ae: Option<&'a str>) -> Request<'a> {
        Request {
            method: &Method::GET,
            tls: false,
            path,
            accept,
            accept_encoding: ae,
            if_none_match: None,
        }
    }

    fn header<'a>(answer: &'a Answer<'_>, name: &str) -> Option<&'a str> {
        answer.header_value(name)
    }

    fn serve<'s>(store: &'s Store, req: Request<'_>) -> Answer<'s> {
        store
            .serve(req)
            .unwrap_or_else(|e| panic!("serve {}: {e}", req.path.as_str()))
    }

    #[test]
    fn brotli_is_preferred_gzip_next_identity_last() {
        assert_eq!(
            negotiate(Some("gzip, deflate, br")),
            vec![Encoding::Brotli, Encoding::Gzip, Encoding::Identity]
        );
        assert_eq!(
            negotiate(Some("gzip")),
            vec![Encoding::Gzip, Encoding::Identity]
        );
        assert_eq!(
            negotiate(Some("br;q=0, gzip")),
            vec![Encoding::Gzip, Encoding::Identity]
        );
        assert_eq!(
            negotiate(Some("*")),
            vec![Encoding::Brotli, Encoding::Gzip, Encoding::Identity]
        );
        assert_eq!(negotiate(None), vec![Encoding::Identity]);
    }

    #[test]
    fn fingerprinted_names_are_recognized() {
        assert!(is_fingerprinted("app.3f2a9c1b.js"));
        assert!(!is_fingerprinted("vendor.a1b2c3d4e5.min.css"));
        assert!(!is_fingerprinted("app.js"));
        assert!(!is_fingerprinted("jquery.min.js"));
        assert!(!is_fingerprinted("app.abcdefgh.js"));
    }

    #[test]
    fn variants_negotiate_with_vary_and_distinct_etags() {
        let s = store();
        let p = decode("/js/app.js").unwrap_or_else(|e| panic!("{e}"));
        let br = serve(&s, get(&p, None, Some("gzip, br")));
        let gz = serve(&s, get(&p, None, Some("gzip")));
        let id = serve(&s, get(&p, None, None));
        assert_eq!(header(&br, "content-encoding"), Some("br"));
        assert_eq!(header(&gz, "content-encoding"), Some("gzip"));
        assert_eq!(header(&id, "content-encoding"), None);
        for r in [&br, &gz, &id] {
            assert_eq!(r.status(), 200);
            assert_eq!(header(r, "vary"), Some("Accept-Encoding"));
            assert_eq!(header(r, "cache-control"), Some("no-cache"));
        }
        assert_ne!(header(&br, "etag"), header(&gz, "etag"));
        assert!(br.body().len() < id.body().len());
    }

    #[test]
    fn a_files_wire_head_says_what_its_header_says() {
        let s = store();
        let p = decode("/js/app.js").unwrap_or_else(|e| panic!("{e}"));
        for tls in [false, true] {
            let answer = serve(
                &s,
                Request {
                    tls,
                    ..get(&p, None, Some("br"))
                },
            );
            let Answer::File { head, .. } = &answer else {
                panic!("not a file");
            };
            let mut wire = head.h1.to_vec();
            wire.extend_from_slice(b"\r\n");
            let mut lines = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut lines);
            assert!(
                matches!(parsed.parse(&wire), Ok(httparse::Status::Complete(n)) if n == wire.len())
            );
            assert_eq!(parsed.code, Some(200));
            assert_eq!(parsed.headers.len(), head.header.headers.len());
            for line in parsed.headers.iter() {
                assert_eq!(
                    header(&answer, line.name).map(str::as_bytes),
                    Some(line.value),
                    "{}",
                    line.name
                );
            }
            let hsts = parsed
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("strict-transport-security"));
            assert_eq!(hsts, tls);
        }
    }

    #[test]
    fn matching_etag_revalidates_to_304_without_body() {
        let s = store();
        let p = decode("/js/app.3f2a9c1b.js").unwrap_or_else(|e| panic!("{e}"));
        let first = serve(&s, get(&p, None, Some("br")));
        assert_eq!(
            header(&first, "cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        let etag = header(&first, "etag").unwrap_or_default().to_string();
        let weak = format!("W/{etag}");
        let again = serve(
            &s,
            Request {
                if_none_match: Some(&weak),
                ..get(&p, None, Some("br"))
            },
        );
        assert_eq!(again.status(), 304);
        assert!(again.body().is_empty());
        assert_eq!(header(&again, "content-length"), None);
        assert_eq!(header(&again, "etag"), Some(etag.as_str()));
    }

    #[test]
    fn every_answer_carries_the_security_headers_and_hsts_only_over_tls() {
        let s = store();
        let p = decode("/js/app.3f2a9c1b.js").unwrap_or_else(|e| panic!("{e}"));
        let missing = decode("/nope.css").unwrap_or_else(|e| panic!("{e}"));
        let plain = serve(&s, get(&p, None, Some("gzip")));
        let tls = serve(
            &s,
            Request {
                tls: true,
                ..get(&p, None, Some("gzip"))
            },
        );
        let not_found = serve(
            &s,
            Request {
                tls: true,
                ..get(&missing, None, None)
            },
        );
        for r in [&plain, &tls, &not_found] {
            for (name, value) in respond::SECURITY {
                assert_eq!(header(r, name), Some(value), "{name}");
            }
        }
        assert_eq!(header(&plain, "strict-transport-security"), None);
        assert_eq!(
            header(&tls, "strict-transport-security"),
            Some(respond::HSTS)
        );
        assert_eq!(
            header(&not_found, "strict-transport-security"),
            Some(respond::HSTS)
        );
        assert_eq!(not_found.status(), 404);
    }

    #[test]
    fn spa_fallback_only_for_html_navigations_without_extension() {
        let s = store();
        let route = decode("/projects/42").unwrap_or_else(|e| panic!("{e}"));
        let missing_js = decode("/js/missing.js").unwrap_or_else(|e| panic!("{e}"));
        let html = Some("text/html,application/xhtml+xml");
        assert_eq!(serve(&s, get(&route, html, None)).status(), 200);
        assert_eq!(
            serve(&s, get(&route, Some("application/json"), None)).status(),
            404
        );
        assert_eq!(serve(&s, get(&missing_js, html, None)).status(), 404);
        let not_found = serve(&s, get(&missing_js, html, None));
        assert_eq!(header(&not_found, "content-type"), Some("application/json"));
    }

    #[test]
    fn dotfiles_are_not_served() {
        let s = store();
        let p = decode("/.secret").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(serve(&s, get(&p, None, None)).status(), 404);
    }

    #[test]
    fn head_has_length_but_no_body() {
        let s = store();
        let p = decode("/").unwrap_or_else(|e| panic!("{e}"));
        let r = serve(
            &s,
            Request {
                method: &Method::HEAD,
                ..get(&p, None, None)
            },
        );
        assert_eq!(r.status(), 200);
        assert!(r.body().is_empty());
        assert_ne!(header(&r, "content-length"), Some("0"));
        assert_eq!(header(&r, "content-type"), Some("text/html; charset=utf-8"));
    }
}
