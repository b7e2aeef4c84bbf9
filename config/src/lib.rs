//! `config.toml`, read by every `btp` role: the typed keys with their defaults
//! ([`model`]), and loading that either yields a [`Config`] that is semantically valid or
//! every problem found, each located as `FILE:LINE:COL: message` (what `btp check` prints
//! and what startup refuses with). Nothing here panics on what a config file contains.

mod model;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use model::*;

/// One thing wrong with a config file, located in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// Every problem found in a config file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// `--config PATH` or `$BTP_CONFIG`: the file must exist.
    Explicit(PathBuf),
    /// No flag: `config.toml` in the working directory if present, else embedded defaults.
    Default,
}

pub const DEFAULT_FILE: &str = "config.toml";

/// Load and validate. `Ok` means every semantic check passed.
pub fn load(source: &Source) -> Result<Config, Problems> {
    let (path, required) = match source {
        Source::Explicit(p) => (p.clone(), true),
        Source::Default => (PathBuf::from(DEFAULT_FILE), false),
    };
    let display = path.display().to_string();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
            let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
            return validate::check(String::new(), "<defaults>".into(), base);
        }
        Err(e) => {
            return Err(Problems(vec![Problem {
                file: display,
                line: 1,
                col: 1,
                message: format!("cannot read config file: {e}"),
            }]))
        }
    };
    let base = base_dir_of(&path);
    validate::check(text, display, base)
}

/// Parse and validate config text as if read from `file` in directory `base_dir`.
pub fn from_str(text: &str, file: &str, base_dir: &Path) -> Result<Config, Problems> {
    validate::check(text.to_string(), file.to_string(), base_dir.to_path_buf())
}

fn base_dir_of(path: &Path) -> PathBuf {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::canonicalize(&dir).unwrap_or(dir)
}
