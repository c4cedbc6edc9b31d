//! Reading a dump: its header checked first, then its rows one at a time,
//! then its trailer checked against the rows read. Every problem names the
//! line it is on.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Deserialize as _;
use serde_json::Value;

use super::{
    Counts, FORMAT, FORMAT_VERSION, Header, MAX_LINE_BYTES, Row, Table, Trailer, bad_line, lines,
};
use crate::Error;
use crate::service_center::data_center::schema;

/// A dump being read.
pub struct DumpReader<R> {
    lines: lines::Lines<R>,
    header: Header,
    counts: Counts,
    trailer: Option<Trailer>,
}

impl DumpReader<BufReader<File>> {
    /// Opens the dump at `path` and checks its header.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path)
            .map_err(|e| Error::FailedPrecondition(format!("the dump {}: {e}", path.display())))?;
        Self::new(BufReader::new(file), MAX_LINE_BYTES)
    }
}

impl<R: BufRead> DumpReader<R> {
    /// Reads and checks the header: a dump of this format's version, of
    /// rows of the SQLite schema this build knows.
    pub fn new(reader: R, max_line_bytes: usize) -> Result<Self, Error> {
        let mut lines = lines::Lines::new(reader, max_line_bytes);
        let Some((number, line)) = lines.next_line()? else {
            return Err(Error::InvalidArgument(
                "the dump is empty: it has no header".into(),
            ));
        };
        let header = parse_header(number, line)?;
        Ok(Self {
            lines,
            header,
            counts: Counts::default(),
            trailer: None,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Rows read so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// The trailer, once [`next_row`](Self::next_row) has reached it.
    pub fn trailer(&self) -> Option<&Trailer> {
        self.trailer.as_ref()
    }

    /// The next row and its line number; `None` once the trailer has been
    /// read, its counts match the rows, and nothing follows it.
    pub fn next_row(&mut self) -> Result<Option<(usize, Row)>, Error> {
        if self.trailer.is_some() {
            return Ok(None);
        }
        let Some((number, line)) = self.lines.next_line()? else {
            return Err(bad_line(
                self.lines.number(),
                "the dump ends here without its trailer: it is truncated",
            ));
        };
        let value: Value =
            serde_json::from_str(line).map_err(|e| bad_line(number, format!("not JSON ({e})")))?;
        let Value::Object(object) = &value else {
            return Err(bad_line(number, "not a JSON object"));
        };
        if let Some(tag) = object.get("table") {
            let known = tag
                .as_str()
                .and_then(Table::from_name)
                .ok_or_else(|| bad_line(number, format!("unknown table {tag}")))?;
            let row: Row = serde_json::from_value(value)
                .map_err(|e| bad_line(number, format!("a row of {}: {e}", known.name())))?;
            self.counts.add(row.table());
            return Ok(Some((number, row)));
        }
        match (object.get("trailer"), object.len()) {
            (Some(trailer), 1) => {
                let trailer = Trailer::deserialize(trailer)
                    .map_err(|e| bad_line(number, format!("the trailer: {e}")))?;
                self.check_trailer(number, &trailer)?;
                if let Some((after, _)) = self.lines.next_line()? {
                    return Err(bad_line(after, "follows the trailer"));
                }
                self.trailer = Some(trailer);
                Ok(None)
            }
            _ => Err(bad_line(
                number,
                "neither a row (with \"table\") nor the trailer",
            )),
        }
    }

    /// The trailer's counts must be the rows read.
    fn check_trailer(&self, number: usize, trailer: &Trailer) -> Result<(), Error> {
        let expected = Counts::from_map(&trailer.rows)
            .map_err(|e| bad_line(number, format!("the trailer: {e}")))?;
        for table in Table::ALL {
            if expected.get(table) != self.counts.get(table) {
                return Err(bad_line(
                    number,
                    format!(
                        "the trailer counts {} rows of {} but the dump holds {}",
                        expected.get(table),
                        table.name(),
                        self.counts.get(table)
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn parse_header(number: usize, line: &str) -> Result<Header, Error> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        header: Header,
    }
    let Line { header } = serde_json::from_str(line).map_err(|e| {
        bad_line(
            number,
            format!("not a data-center dump's header ({e}); was it written by meridian-data-center export?"),
        )
    })?;
    if header.format != FORMAT {
        return Err(bad_line(
            number,
            format!("format {:?}, not {FORMAT:?}", header.format),
        ));
    }
    if header.version != FORMAT_VERSION {
        return Err(bad_line(
            number,
            format!(
                "dump format version {}; this build reads version {FORMAT_VERSION}",
                header.version
            ),
        ));
    }
    if header.sqlite_schema_version != schema::current_version() {
        return Err(bad_line(
            number,
            format!(
                "rows of SQLite schema version {}; this build reads version {}: \
                 import with the build that exported",
                header.sqlite_schema_version,
                schema::current_version()
            ),
        ));
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> String {
        format!(
            r#"{{"header":{{"format":"{FORMAT}","version":{FORMAT_VERSION},"sqlite_schema_version":{},"exported_at_ms":1}}}}"#,
            schema::current_version()
        )
    }

    const USER: &str = r#"{"table":"users","id":"ann@eu","password_hash":"h","attached_region":"eu","created_at_ms":1}"#;

    fn trailer(users: u64) -> String {
        let rows: Vec<String> = Table::ALL
            .iter()
            .map(|t| {
                format!(
                    "\"{}\":{}",
                    t.name(),
                    if *t == Table::Users { users } else { 0 }
                )
            })
            .collect();
        format!(
            r#"{{"trailer":{{"rows":{{{}}},"outbox_last_id":0}}}}"#,
            rows.join(",")
        )
    }

    /// Reads `lines` (each given its newline) to the end.
    fn read(lines: &[&str]) -> Result<Vec<Row>, Error> {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let mut dump = DumpReader::new(text.as_bytes(), 1024)?;
        let mut rows = Vec::new();
        while let Some((_, row)) = dump.next_row()? {
            rows.push(row);
        }
        assert!(dump.trailer().is_some());
        Ok(rows)
    }

    fn message(result: Result<Vec<Row>, Error>) -> String {
        match result {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn a_whole_dump_reads_its_rows() {
        let rows = read(&[&header(), USER, &trailer(1)]).unwrap();
        assert!(matches!(&rows[..], [Row::Users(u)] if u.id == "ann@eu"));
        assert!(read(&[&header(), &trailer(0)]).unwrap().is_empty());
    }

    #[test]
    fn an_unknown_table_names_its_line() {
        let row = r#"{"table":"leases","destination":"us"}"#;
        assert_eq!(
            message(read(&[&header(), USER, row, &trailer(1)])),
            r#"dump line 3: unknown table "leases""#
        );
    }

    #[test]
    fn a_dump_without_its_trailer_or_with_other_counts_is_refused() {
        assert_eq!(
            message(read(&[&header(), USER])),
            "dump line 2: the dump ends here without its trailer: it is truncated"
        );
        assert_eq!(
            message(read(&[&header(), USER, &trailer(2)])),
            "dump line 3: the trailer counts 2 rows of users but the dump holds 1"
        );
        assert_eq!(
            message(read(&[&header(), &trailer(0), USER])),
            "dump line 3: follows the trailer"
        );
    }

    #[test]
    fn a_header_of_another_format_or_version_is_refused() {
        let other = header().replace(FORMAT, "pg_dump");
        assert!(message(read(&[&other, &trailer(0)])).contains("format \"pg_dump\""));
        let newer = header().replace(
            &format!("\"version\":{FORMAT_VERSION}"),
            &format!("\"version\":{}", FORMAT_VERSION + 1),
        );
        assert!(message(read(&[&newer, &trailer(0)])).contains("this build reads version 1"),);
        let schema = header().replace(
            &format!("\"sqlite_schema_version\":{}", schema::current_version()),
            "\"sqlite_schema_version\":5",
        );
        assert!(message(read(&[&schema, &trailer(0)])).contains("SQLite schema version 5"));
        assert!(
            message(read(&[USER, &trailer(1)]))
                .starts_with("dump line 1: not a data-center dump's header")
        );
        assert_eq!(message(read(&[])), "the dump is empty: it has no header");
    }

    #[test]
    fn lines_that_are_not_rows_are_refused() {
        assert!(
            message(read(&[&header(), "{\"table\":", &trailer(0)]))
                .starts_with("dump line 2: not JSON")
        );
        assert_eq!(
            message(read(&[&header(), "[1]", &trailer(0)])),
            "dump line 2: not a JSON object"
        );
        assert_eq!(
            message(read(&[&header(), &header(), &trailer(0)])),
            "dump line 2: neither a row (with \"table\") nor the trailer"
        );
        let bad = r#"{"table":"users","id":"ann@eu"}"#;
        assert!(
            message(read(&[&header(), bad, &trailer(1)]))
                .starts_with("dump line 2: a row of users: missing field")
        );
    }
}
