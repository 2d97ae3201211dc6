//! A CSV record reader whose memory is bounded by `CSV_MAX_RECORD_BYTES`.
//!
//! `csv::Reader` grows a record's buffer until the record ends, so one
//! unclosed quote near the top of a multi-GB file would make the rest of the
//! file one field in memory. This reader runs the same parser (`csv_core`,
//! which `csv` is built on, with the same defaults) but stops keeping a
//! record's bytes once it passes the limit, and only looks for where it ends:
//!
//! - a record larger than the limit is [`Next::Oversized`]: the import
//!   rejects it with its line and goes on after it;
//! - an oversized record that runs to the end of the file inside an open
//!   quote is [`TooLarge::UnclosedQuote`]: an error naming the line where
//!   the record began, since everything after that line was swallowed.
//!
//! Each record also comes with its original bytes, exactly as in the file,
//! for the rejected-lines report.

use std::io::BufRead;

use csv_core::ReadRecordResult;

/// How much of an oversized record's original bytes the report keeps.
const OVERSIZED_HEAD: usize = 1024;

/// What [`RecordReader::next`] found.
#[derive(Debug)]
pub(super) enum Next {
    /// A record: [`RecordReader::fields`] and [`RecordReader::raw`] hold it.
    Record,
    /// A record of `bytes` bytes, over the limit; [`RecordReader::raw`]
    /// holds its first bytes.
    Oversized { bytes: u64 },
    /// The end of the data.
    End,
}

/// A fatal reading error.
#[derive(Debug, thiserror::Error)]
pub(super) enum TooLarge {
    #[error(
        "line {line}: a quoted field opened in the record starting here is never closed; \
         the record runs to the end of the file ({bytes} bytes, over the {limit}-byte CSV_MAX_RECORD_BYTES)"
    )]
    UnclosedQuote { line: u64, bytes: u64, limit: usize },
    #[error("reading the CSV: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads records from `R`, keeping at most about `max_record_bytes` of any one.
#[derive(Debug)]
pub(super) struct RecordReader<R> {
    rdr: R,
    core: csv_core::Reader,
    max_record_bytes: usize,
    /// Bytes consumed so far.
    byte: u64,
    /// The current record's line (1-based, relative to where reading began).
    line: u64,
    fields: Vec<u8>,
    ends: Vec<usize>,
    nfields: usize,
    raw: Vec<u8>,
}

impl<R: BufRead> RecordReader<R> {
    pub(super) fn new(rdr: R, max_record_bytes: usize) -> Self {
        Self {
            rdr,
            core: csv_core::Reader::new(),
            max_record_bytes: max_record_bytes.max(1),
            byte: 0,
            line: 1,
            fields: vec![0; 4096],
            ends: vec![0; 64],
            nfields: 0,
            raw: Vec::with_capacity(4096),
        }
    }

    /// Where the next record starts: (line, byte), relative to where this
    /// reader began.
    pub(super) fn position(&self) -> (u64, u64) {
        (self.core.line(), self.byte)
    }

    /// The line the last record began on.
    pub(super) fn line(&self) -> u64 {
        self.line
    }

    /// The last record's fields.
    pub(super) fn fields(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends[..self.nfields].iter().map(move |&end| {
            let field = &self.fields[start..end];
            start = end;
            field
        })
    }

    /// The last record's original bytes (its first bytes, when oversized),
    /// without its line terminator.
    pub(super) fn raw(&self) -> &[u8] {
        let mut raw = self.raw.as_slice();
        while let [rest @ .., b'\n' | b'\r'] = raw {
            raw = rest;
        }
        raw
    }

    /// Reads the next record.
    pub(super) fn next(&mut self) -> Result<Next, TooLarge> {
        let start_byte = self.byte;
        let mut line = self.core.line();
        let (mut outlen, mut endlen) = (0, 0);
        let mut oversized = false;
        // quotes seen in an oversized record: odd means still inside one
        let mut quotes = 0u64;
        let mut leading = true;
        self.raw.clear();
        loop {
            let input = self.rdr.fill_buf()?;
            let at_eof = input.is_empty();
            let (res, nin, nout, nend) =
                self.core
                    .read_record(input, &mut self.fields[outlen..], &mut self.ends[endlen..]);
            let mut consumed = &input[..nin];
            if leading {
                // blank lines before a record are no part of it
                let skip = consumed
                    .iter()
                    .take_while(|b| matches!(b, b'\n' | b'\r'))
                    .count();
                line += consumed[..skip].iter().filter(|&&b| b == b'\n').count() as u64;
                consumed = &consumed[skip..];
                leading = consumed.is_empty();
            }
            if oversized {
                quotes += count_quotes(consumed);
            } else {
                self.raw.extend_from_slice(consumed);
            }
            self.rdr.consume(nin);
            self.byte += nin as u64;
            outlen += nout;
            endlen += nend;
            if !oversized && self.byte - start_byte > self.max_record_bytes as u64 {
                oversized = true;
                quotes = count_quotes(&self.raw);
                self.raw.truncate(OVERSIZED_HEAD);
                self.raw.shrink_to(OVERSIZED_HEAD.max(4096));
            }
            match res {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    if oversized {
                        outlen = 0; // only the record's end is still wanted
                    } else {
                        let len = self.fields.len();
                        self.fields.resize(len * 2, 0);
                    }
                }
                ReadRecordResult::OutputEndsFull => {
                    if oversized {
                        endlen = 0;
                    } else {
                        let len = self.ends.len();
                        self.ends.resize(len * 2, 0);
                    }
                }
                ReadRecordResult::Record => {
                    self.line = line;
                    let bytes = self.byte - start_byte;
                    if oversized {
                        self.shrink();
                        self.nfields = 0;
                        if at_eof && quotes % 2 == 1 {
                            return Err(TooLarge::UnclosedQuote {
                                line,
                                bytes,
                                limit: self.max_record_bytes,
                            });
                        }
                        return Ok(Next::Oversized { bytes });
                    }
                    self.nfields = endlen;
                    return Ok(Next::Record);
                }
                ReadRecordResult::End => {
                    self.nfields = 0;
                    return Ok(Next::End);
                }
            }
        }
    }

    /// Gives back what an oversized record made the buffers grow to.
    fn shrink(&mut self) {
        let cap = self.max_record_bytes.clamp(4096, 1 << 20);
        if self.fields.len() > cap {
            self.fields.truncate(cap);
            self.fields.shrink_to_fit();
        }
        if self.ends.len() > 4096 {
            self.ends.truncate(4096);
            self.ends.shrink_to_fit();
        }
    }
}

fn count_quotes(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'"').count() as u64
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A record as read: its line, fields and original text.
    type Read = (u64, Vec<String>, String);

    fn read_all(data: &[u8], max: usize) -> Vec<Result<Read, String>> {
        let mut r = RecordReader::new(std::io::BufReader::with_capacity(7, data), max);
        let mut out = Vec::new();
        loop {
            match r.next() {
                Ok(Next::Record) => out.push(Ok((
                    r.line(),
                    r.fields()
                        .map(|f| String::from_utf8_lossy(f).into_owned())
                        .collect(),
                    String::from_utf8_lossy(r.raw()).into_owned(),
                ))),
                Ok(Next::Oversized { bytes }) => {
                    out.push(Err(format!("line {}: oversized {bytes}", r.line())))
                }
                Ok(Next::End) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    #[test]
    fn records_parse_like_the_csv_crate_with_lines_and_original_bytes() {
        let data = b"a,b\n\n\"x,1\",\"two\nlines\"\r\nlast,\"q\"\"uote\"";
        let got = read_all(data, 1 << 20);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Ok((1, vec!["a".into(), "b".into()], "a,b".into())));
        assert_eq!(
            got[1],
            Ok((
                3,
                vec!["x,1".into(), "two\nlines".into()],
                "\"x,1\",\"two\nlines\"".into()
            ))
        );
        assert_eq!(
            got[2],
            Ok((
                5,
                vec!["last".into(), "q\"uote".into()],
                "last,\"q\"\"uote\"".into()
            ))
        );
        // the same fields as csv::Reader gives
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(&data[..]);
        let theirs: Vec<Vec<String>> = csv
            .records()
            .map(|r| r.unwrap().iter().map(String::from).collect())
            .collect();
        let ours: Vec<Vec<String>> = got.into_iter().map(|r| r.unwrap().1).collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn an_oversized_record_is_reported_with_its_line_and_reading_goes_on() {
        let big = "x".repeat(100);
        let data = format!("a,b\n\"{big}\",1\nc,d\n");
        let got = read_all(data.as_bytes(), 50);
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], Err("line 2: oversized 105".into()));
        assert_eq!(got[2], Ok((3, vec!["c".into(), "d".into()], "c,d".into())));
    }

    #[test]
    fn an_unclosed_quote_that_swallows_the_file_names_the_line_it_began_on() {
        let mut data = String::from("a,b\nc,d\n\"open,1\n");
        for i in 0..100 {
            data.push_str(&format!("row{i},plain\n"));
        }
        let got = read_all(data.as_bytes(), 200);
        let last = got.last().unwrap().clone().unwrap_err();
        assert!(last.starts_with("line 3: a quoted field"), "{last}");
        assert_eq!(got.len(), 3);
        // a later quote closes it: the long record is rejected and reading goes on
        let mut data = String::from("a,b\n\"open,1\n");
        for i in 0..100 {
            data.push_str(&format!("row{i},plain\n"));
        }
        data.push_str("end\",x\nlast,1\n");
        let got = read_all(data.as_bytes(), 200);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[1].clone().unwrap_err().starts_with("line 2: oversized"));
        assert_eq!(
            got[2],
            Ok((104, vec!["last".into(), "1".into()], "last,1".into()))
        );
    }

    #[test]
    fn memory_stays_bounded_whatever_the_record_size() {
        // a 5 MB unclosed field with a 64 KB limit
        let mut data = b"\"".to_vec();
        data.extend(std::iter::repeat_n(b'y', 5 << 20));
        let mut r = RecordReader::new(std::io::BufReader::new(&data[..]), 64 << 10);
        assert!(matches!(
            r.next(),
            Err(TooLarge::UnclosedQuote { line: 1, .. })
        ));
        assert!(r.fields.len() <= 256 << 10, "{}", r.fields.len());
        assert!(r.raw.capacity() <= 64 << 10);
    }
}
