//! The dump's lines, read one at a time and never longer than a bound: a
//! corrupt or hostile file cannot make the reader hold more than that.

use std::io::{BufRead, Read};

use super::bad_line;
use crate::Error;

/// Lines of a dump, numbered from 1.
pub struct Lines<R> {
    reader: R,
    max_bytes: usize,
    number: usize,
    buf: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    /// Lines of `reader`, each at most `max_bytes` without its newline.
    pub fn new(reader: R, max_bytes: usize) -> Self {
        Self {
            reader,
            max_bytes,
            number: 0,
            buf: Vec::new(),
        }
    }

    /// The number of the line [`next_line`](Self::next_line) returned last.
    pub fn number(&self) -> usize {
        self.number
    }

    /// The next line and its number; `None` at the end. A line must end
    /// with a newline: one that does not was cut off.
    pub fn next_line(&mut self) -> Result<Option<(usize, &str)>, Error> {
        self.buf.clear();
        let limit = self.max_bytes as u64 + 1;
        let read = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| {
                Error::FailedPrecondition(format!("reading dump line {}: {e}", self.number + 1))
            })?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        } else if self.buf.len() > self.max_bytes {
            return Err(bad_line(
                self.number,
                format!("longer than {} bytes", self.max_bytes),
            ));
        } else {
            return Err(bad_line(
                self.number,
                "cut off (no line end): the dump is truncated",
            ));
        }
        let text = std::str::from_utf8(&self.buf)
            .map_err(|e| bad_line(self.number, format!("not UTF-8 ({e})")))?;
        Ok(Some((self.number, text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &[u8], max: usize) -> Result<Vec<(usize, String)>, Error> {
        let mut lines = Lines::new(text, max);
        let mut out = Vec::new();
        while let Some((n, line)) = lines.next_line()? {
            out.push((n, line.to_string()));
        }
        Ok(out)
    }

    #[test]
    fn lines_are_numbered_and_may_be_exactly_the_bound() {
        assert_eq!(
            all(b"abcd\n\nxy\n", 4).unwrap(),
            [(1, "abcd".into()), (2, String::new()), (3, "xy".into())]
        );
    }

    #[test]
    fn a_line_past_the_bound_is_refused_by_its_number() {
        let err = all(b"ab\nabcde\nab\n", 4).unwrap_err();
        assert_eq!(
            err,
            Error::InvalidArgument("dump line 2: longer than 4 bytes".into())
        );
    }

    #[test]
    fn a_last_line_without_its_end_is_truncation() {
        let err = all(b"ab\n{\"tab", 64).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m == "dump line 2: cut off (no line end): the dump is truncated"),
            "{err:?}"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused() {
        let err = all(b"ok\n\xff\xfe\n", 64).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.starts_with("dump line 2: not UTF-8")),
            "{err:?}"
        );
    }
}
