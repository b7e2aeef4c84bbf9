//! [`Args`]: the arguments of an event or an acknowledgement — JSON values plus binary
//! attachments.
//!
//! Values are kept as raw JSON text (`serde_json::value::RawValue`), never re-parsed into
//! a tree on the way through: an echo returns exactly the bytes it got (key order
//! included), a handler deserializes only the argument it needs straight into its own
//! type, and encoding an outgoing packet is a copy of text. Binary attachments are
//! referenced from the JSON by the Socket.IO placeholder object
//! `{"_placeholder":true,"num":N}` and carried as `Bytes` in [`Args::binary`].

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;

/// Arguments of an event or acknowledgement.
#[derive(Debug, Clone, Default)]
pub struct Args {
    values: Vec<Box<RawValue>>,
    binary: Vec<Bytes>,
}

/// An argument that is missing or does not have the expected shape.
#[derive(Debug, thiserror::Error)]
pub enum ArgError {
    #[error("argument {0} is missing")]
    Missing(usize),
    #[error("argument {index} is invalid: {source}")]
    Invalid {
        index: usize,
        #[source]
        source: serde_json::Error,
    },
}

impl Args {
    /// No arguments.
    pub fn new() -> Self {
        Args::default()
    }

    /// One argument, serialized from `value`.
    pub fn one(value: &impl Serialize) -> Result<Self, serde_json::Error> {
        let mut args = Args::new();
        args.push(value)?;
        Ok(args)
    }

    /// Appends an argument serialized from `value`.
    pub fn push(&mut self, value: &impl Serialize) -> Result<(), serde_json::Error> {
        self.values.push(serde_json::value::to_raw_value(value)?);
        Ok(())
    }

    /// Appends an argument given as JSON text.
    pub fn push_raw(&mut self, value: Box<RawValue>) {
        self.values.push(value);
    }

    /// Appends a binary argument (encoded as a placeholder plus an attachment).
    pub fn push_binary(&mut self, bytes: Bytes) {
        let placeholder = format!(r#"{{"_placeholder":true,"num":{}}}"#, self.binary.len());
        if let Ok(raw) = RawValue::from_string(placeholder) {
            self.values.push(raw);
            self.binary.push(bytes);
        }
    }

    /// Builds arguments from parts; `binary[n]` is what placeholder `num: n` refers to.
    pub fn from_parts(values: Vec<Box<RawValue>>, binary: Vec<Bytes>) -> Self {
        Args { values, binary }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The JSON text of argument `index` (binary arguments appear as placeholders).
    pub fn raw(&self, index: usize) -> Option<&RawValue> {
        self.values.get(index).map(|v| &**v)
    }

    /// All arguments as JSON text.
    pub fn values(&self) -> &[Box<RawValue>] {
        &self.values
    }

    /// Deserializes argument `index`.
    pub fn get<T: DeserializeOwned>(&self, index: usize) -> Result<T, ArgError> {
        let raw = self.values.get(index).ok_or(ArgError::Missing(index))?;
        serde_json::from_str(raw.get()).map_err(|source| ArgError::Invalid { index, source })
    }

    /// The binary attachments, in placeholder order.
    pub fn binary(&self) -> &[Bytes] {
        &self.binary
    }

    /// Writes the arguments as a JSON array into `out`, optionally preceded by an event
    /// name.
    pub(crate) fn write_array(&self, out: &mut Vec<u8>, name: Option<&str>) {
        out.push(b'[');
        let mut first = true;
        if let Some(name) = name {
            write_json_str(out, name);
            first = false;
        }
        for value in &self.values {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(value.get().as_bytes());
        }
        out.push(b']');
    }

    /// Bytes [`Args::write_array`] writes, to size buffers once.
    pub(crate) fn json_len(&self) -> usize {
        2 + self.values.iter().map(|v| v.get().len() + 1).sum::<usize>()
    }
}

/// Writes `s` as a JSON string literal.
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_keep_their_json_text() {
        let mut args = Args::new();
        args.push_raw(RawValue::from_string(r#"{"b":1,"a":[true]}"#.into()).unwrap());
        args.push(&"x").unwrap();
        args.push_binary(Bytes::from_static(&[1, 2]));
        let mut out = Vec::new();
        args.write_array(&mut out, Some("ev"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"["ev",{"b":1,"a":[true]},"x",{"_placeholder":true,"num":0}]"#
        );
        assert_eq!(args.get::<String>(1).unwrap(), "x");
        assert!(matches!(
            args.get::<u32>(1),
            Err(ArgError::Invalid { index: 1, .. })
        ));
        assert!(matches!(args.get::<u32>(9), Err(ArgError::Missing(9))));
        assert_eq!(args.binary().len(), 1);
    }
}
