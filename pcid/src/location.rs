//! File-and-line locations for configuration errors.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A position in a configuration file, printed as `file:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// 1-based line number; 0 when the position is unknown.
    pub line: usize,
}

impl Location {
    /// Location of byte offset `offset` in `text` (the contents of `file`).
    pub fn at_offset(file: &Path, text: &str, offset: usize) -> Self {
        let end = offset.min(text.len());
        let line = text
            .as_bytes()
            .get(..end)
            .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
            + 1;
        Self {
            file: file.to_path_buf(),
            line,
        }
    }

    /// Location of the start of `span` in `text`, or the whole file when unknown.
    pub fn at_span(file: &Path, text: &str, span: Option<Range<usize>>) -> Self {
        match span {
            Some(span) => Self::at_offset(file, text, span.start),
            None => Self {
                file: file.to_path_buf(),
                line: 0,
            },
        }
    }

    /// Location of the file as a whole.
    pub fn file(file: &Path) -> Self {
        Self {
            file: file.to_path_buf(),
            line: 0,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}", self.file.display(), self.line)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_from_one() {
        let text = "a\nb\nc\n";
        let p = Path::new("m.toml");
        assert_eq!(Location::at_offset(p, text, 0).line, 1);
        assert_eq!(Location::at_offset(p, text, 2).line, 2);
        assert_eq!(Location::at_offset(p, text, 4).to_string(), "m.toml:3");
        assert_eq!(Location::at_offset(p, text, 999).line, 4);
        assert_eq!(Location::at_span(p, text, None).to_string(), "m.toml");
    }
}

/// A parser's message folded onto one line (TOML errors can span several),
/// so that each configuration error is a single `file:line: message` line.
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod one_line_tests {
    use super::one_line;

    #[test]
    fn folds_multi_line_messages() {
        assert_eq!(
            one_line("unknown field `clas`\nexpected one of `class`, `device`\n"),
            "unknown field `clas`; expected one of `class`, `device`"
        );
        assert_eq!(one_line("plain"), "plain");
    }
}
