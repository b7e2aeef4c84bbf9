//! Where a message body ends, found as its bytes go by.
//!
//! [`Body`] follows a body framed by length, by chunks (RFC 9112 §7.1) or by the end of
//! the connection. A response is relayed as the worker framed it, so [`Body::take`] only
//! says how many of the bytes at hand belong to it. A request body is re-framed by the
//! gateway, so [`Body::feed`] also hands out the data inside the chunks: the worker gets
//! canonical chunks (or a length) and reads exactly the boundaries the gateway read,
//! whatever chunk extensions, trailers or spacing the client sent.

/// How a body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    Length(u64),
    Chunked,
    /// Whatever comes until the sender closes (a response only).
    UntilClose,
}

/// A body that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// A chunk-size line, chunk end or trailer that is not what RFC 9112 allows.
    BadChunk,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed chunked body")
    }
}

impl std::error::Error for BodyError {}

/// The longest chunk-size or trailer line.
pub const MAX_CHUNK_LINE: usize = 4096;

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In a chunk-size line: the size so far, its digits, whether an extension began, and
    /// the line's length so far.
    Size {
        size: u64,
        digits: u8,
        ext: bool,
        line: usize,
    },
    /// The size line's CR was read.
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// In the trailer section, `line` bytes into a line.
    Trailer {
        line: usize,
    },
    TrailerLf {
        line: usize,
    },
}

impl Chunk {
    const START: Chunk = Chunk::Size {
        size: 0,
        digits: 0,
        ext: false,
        line: 0,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    UntilClose,
    Chunked(Chunk),
    Done,
}

/// A body's progress.
#[derive(Debug, Clone, Copy)]
pub struct Body {
    state: State,
    /// Request bodies: no whitespace in a size line before its extension, no control
    /// characters in an extension.
    strict: bool,
}

/// What [`Body::feed`] did with some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// How many of the bytes belong to the body.
    pub used: usize,
    /// The body ended within them.
    pub done: bool,
}

impl Body {
    /// A response body, framed by its sender (a worker: lenient about chunk spacing).
    pub fn response(framing: Framing) -> Body {
        Body::new(framing, false)
    }

    /// A request body, read strictly.
    pub fn request(framing: Framing) -> Body {
        Body::new(framing, true)
    }

    fn new(framing: Framing, strict: bool) -> Body {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::UntilClose => State::UntilClose,
            Framing::Chunked => State::Chunked(Chunk::START),
        };
        Body { state, strict }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The body ends when its sender closes.
    pub fn until_close(&self) -> bool {
        self.state == State::UntilClose
    }

    /// The part of `bytes` that belongs to the body (all of it, unless the body ends
    /// inside it).
    pub fn take<'b>(&mut self, bytes: &'b [u8]) -> Result<&'b [u8], BodyError> {
        let fed = self.feed(bytes, |_| {})?;
        Ok(&bytes[..fed.used])
    }

    /// Advance over `bytes`, handing each piece of the body's data (chunk contents, not
    /// their framing) to `data`.
    pub fn feed<'b>(
        &mut self,
        bytes: &'b [u8],
        mut data: impl FnMut(&'b [u8]),
    ) -> Result<Fed, BodyError> {
        let fed = match &mut self.state {
            State::Done => Fed {
                used: 0,
                done: true,
            },
            State::UntilClose => {
                data(bytes);
                Fed {
                    used: bytes.len(),
                    done: false,
                }
            }
            State::Length(rest) => {
                let n = usize::try_from(*rest)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                *rest -= n as u64;
                if n > 0 {
                    data(&bytes[..n]);
                }
                Fed {
                    used: n,
                    done: *rest == 0,
                }
            }
            State::Chunked(chunk) => scan(chunk, bytes, self.strict, &mut data)?,
        };
        if fed.done {
            self.state = State::Done;
        }
        Ok(fed)
    }
}

/// Advance `chunk` over `bytes`.
fn scan<'b>(
    chunk: &mut Chunk,
    bytes: &'b [u8],
    strict: bool,
    data: &mut impl FnMut(&'b [u8]),
) -> Result<Fed, BodyError> {
    let mut i = 0;
    while i < bytes.len() {
        if let Chunk::Data(rest) = chunk {
            let n = usize::try_from(*rest)
                .unwrap_or(usize::MAX)
                .min(bytes.len() - i);
            data(&bytes[i..i + n]);
            i += n;
            *rest -= n as u64;
            if *rest == 0 {
                *chunk = Chunk::DataCr;
            }
            continue;
        }
        let b = bytes[i];
        i += 1;
        *chunk = match (*chunk, b) {
            (Chunk::Size { line, .. }, _) if line >= MAX_CHUNK_LINE => {
                return Err(BodyError::BadChunk)
            }
            (
                Chunk::Size {
                    size,
                    digits,
                    ext: false,
                    line,
                },
                _,
            ) if b.is_ascii_hexdigit() => {
                if digits >= 16 {
                    return Err(BodyError::BadChunk);
                }
                let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
                Chunk::Size {
                    size: size << 4 | digit,
                    digits: digits + 1,
                    ext: false,
                    line: line + 1,
                }
            }
            (Chunk::Size { size, digits, .. }, b'\r') if digits > 0 => Chunk::SizeLf { size },
            (
                Chunk::Size {
                    size,
                    digits,
                    ext: false,
                    line,
                },
                b';',
            ) if digits > 0 => Chunk::Size {
                size,
                digits,
                ext: true,
                line: line + 1,
            },
            // A worker's chunk may pad its size line before the extension.
            (
                Chunk::Size {
                    size, digits, line, ..
                },
                b' ' | b'\t',
            ) if digits > 0 && !strict => Chunk::Size {
                size,
                digits,
                ext: true,
                line: line + 1,
            },
            (
                Chunk::Size {
                    size,
                    digits,
                    ext: true,
                    line,
                },
                _,
            ) if b == b'\t' || b >= 0x20 && b != 0x7f || (!strict && b != b'\n') => Chunk::Size {
                size,
                digits,
                ext: true,
                line: line + 1,
            },
            (Chunk::SizeLf { size: 0 }, b'\n') => Chunk::Trailer { line: 0 },
            (Chunk::SizeLf { size }, b'\n') => Chunk::Data(size),
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataLf, b'\n') => Chunk::START,
            (Chunk::Trailer { line }, b'\r') => Chunk::TrailerLf { line },
            (Chunk::TrailerLf { line: 0 }, b'\n') => {
                return Ok(Fed {
                    used: i,
                    done: true,
                })
            }
            (Chunk::TrailerLf { .. }, b'\n') => Chunk::Trailer { line: 0 },
            (Chunk::Trailer { line }, _) if b != b'\n' && line < MAX_CHUNK_LINE => {
                Chunk::Trailer { line: line + 1 }
            }
            _ => return Err(BodyError::BadChunk),
        };
    }
    Ok(Fed {
        used: i,
        done: false,
    })
}

/// A canonical chunk for `data` (`<hex size>\r\n<data>\r\n`), appended to `out`; nothing
/// for empty data (an empty chunk would end the body).
pub fn put_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `body` in pieces of `step` bytes: the data, and whether it ended.
    fn read(
        framing: Framing,
        strict: bool,
        body: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, bool, usize), BodyError> {
        let mut b = Body::new(framing, strict);
        let mut data = Vec::new();
        let mut used = 0;
        for piece in body.chunks(step) {
            let fed = b.feed(piece, |d| data.extend_from_slice(d))?;
            used += fed.used;
            if fed.done {
                return Ok((data, true, used));
            }
        }
        Ok((data, b.is_done(), used))
    }

    #[test]
    fn a_chunked_body_ends_after_its_last_chunk_and_trailers_in_any_split() {
        let body = b"5;name=v\r\nhello\r\n7\r\n, world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..body.len() {
            let (data, done, used) = read(Framing::Chunked, true, body, step).unwrap();
            assert_eq!(data, b"hello, world", "step {step}");
            assert!(done);
            assert_eq!(used, body.len() - 4, "step {step}");
        }
    }

    #[test]
    fn malformed_chunks_are_refused_and_requests_more_strictly() {
        for body in [
            &b"g\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"11111111111111111\r\n",
            b"0\r\nbad\ntrailer\r\n\r\n",
        ] {
            assert_eq!(
                read(Framing::Chunked, false, body, 1),
                Err(BodyError::BadChunk),
                "{body:?}"
            );
        }
        // A worker may pad; a client may not.
        let padded = b"5 \r\nhello\r\n0\r\n\r\n";
        assert!(read(Framing::Chunked, false, padded, 3).is_ok());
        assert_eq!(
            read(Framing::Chunked, true, padded, 3),
            Err(BodyError::BadChunk)
        );
        let control = b"5;a\x01b\r\nhello\r\n0\r\n\r\n";
        assert_eq!(
            read(Framing::Chunked, true, control, 3),
            Err(BodyError::BadChunk)
        );
    }

    #[test]
    fn a_sized_body_ends_at_its_length_and_an_unsized_one_never() {
        let (data, done, used) = read(Framing::Length(5), true, b"helloGET /", 4).unwrap();
        assert_eq!((data.as_slice(), done, used), (&b"hello"[..], true, 5));
        let (data, done, _) = read(Framing::UntilClose, false, b"abc", 1).unwrap();
        assert_eq!((data.as_slice(), done), (&b"abc"[..], false));
        assert!(Body::request(Framing::Empty).is_done());
        assert!(Body::request(Framing::Length(0)).is_done());
    }

    #[test]
    fn re_encoded_chunks_read_back_to_the_same_data() {
        let mut out = Vec::new();
        put_chunk(&mut out, b"hello");
        put_chunk(&mut out, b"");
        put_chunk(&mut out, &[7u8; 300]);
        out.extend_from_slice(LAST_CHUNK);
        let (data, done, used) = read(Framing::Chunked, true, &out, 7).unwrap();
        assert!(done);
        assert_eq!(used, out.len());
        assert_eq!(&data[..5], b"hello");
        assert_eq!(data.len(), 305);
    }
}
