//! Loading a list file into a set, with bounds: lines are read one at a
//! time (never more than [`MAX_LINE`] bytes of one), entries are counted
//! as they come and duplicates folded away as the load goes, so a hostile
//! file (gigabytes, a line without end, NUL bytes, invalid UTF-8, a
//! million copies of one name) either loads within `max_entries` or fails
//! with the reason, holding memory in proportion to what it keeps.

use super::cidrs::CidrSet;
use super::names::{reversed, NameSet, KEY_MAX};
use super::parse::{parse_line, Format, Line};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// The longest line read, in bytes: more than any list's longest rule
/// (adblock lists have long `domain=` rules), far less than a file
/// without line ends.
pub const MAX_LINE: usize = 64 * 1024;

/// Bad lines named in a report, at most.
const NAMED_BAD_LINES: usize = 5;

/// What a load found besides its entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Distinct entries kept.
    pub entries: usize,
    /// Lines skipped as not of the format.
    pub skipped: u64,
    /// The first few skipped lines: line number and why.
    pub bad: Vec<(u64, &'static str)>,
}

/// A loaded set.
#[derive(Debug)]
pub enum Contents {
    /// Names, each covering its subdomains.
    Names(NameSet),
    /// Address ranges.
    Cidrs(CidrSet),
}

/// Names as they are read: each new one's fingerprint goes into the set
/// and its reversed key into an arena (scratch for the end of the load,
/// when names under a listed parent are dropped). Duplicates are found as
/// they come and never stored twice, so a million copies of a name are
/// one entry.
struct NameKeys {
    set: NameSet,
    arena: Vec<u8>,
    ends: Vec<u32>,
    max: usize,
}

impl NameKeys {
    fn push(&mut self, name: &str) -> Result<(), String> {
        let mut buf = [0; KEY_MAX];
        let key = reversed(name, &mut buf).ok_or("a name over 253 bytes")?;
        if !self.set.insert_key(key) {
            return Ok(());
        }
        self.arena.extend_from_slice(key);
        let end = u32::try_from(self.arena.len()).map_err(|_| "the list is too large")?;
        self.ends.push(end);
        // Names under a listed parent are dropped at the end, so up to
        // twice max_entries may be held until then.
        if self.set.len() > 2 * self.max + 1024 {
            return Err(format!("more than max_entries ({}) entries", self.max));
        }
        Ok(())
    }

    fn build(self) -> Result<NameSet, String> {
        let NameKeys {
            mut set,
            arena,
            ends,
            max,
        } = self;
        let starts = std::iter::once(0).chain(ends.iter().copied());
        let keys = starts
            .zip(ends.iter().copied())
            .map(|(a, b)| &arena[a as usize..b as usize]);
        set.drop_covered(keys);
        if set.len() > max {
            return Err(format!("more than max_entries ({max}) entries"));
        }
        Ok(set)
    }
}

/// Reads the next line into `line` (without its end); `Ok(false)` at the
/// end of the file.
fn next_line(r: &mut impl BufRead, line: &mut Vec<u8>, n: u64) -> Result<bool, String> {
    line.clear();
    let mut taken = r.take(MAX_LINE as u64 + 1);
    let read = taken.read_until(b'\n', line).map_err(|e| e.to_string())?;
    if read == 0 {
        return Ok(false);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > MAX_LINE {
        return Err(format!("line {n} is longer than {MAX_LINE} bytes"));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(true)
}

/// Loads `path` in `format`, keeping at most `max_entries` entries; the
/// reason when it cannot (unreadable, a line too long, too many entries,
/// no valid entry at all).
pub fn load(path: &Path, format: Format, max_entries: usize) -> Result<(Contents, Report), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut report = Report::default();
    let mut names = NameKeys {
        set: NameSet::default(),
        arena: Vec::new(),
        ends: Vec::new(),
        max: max_entries,
    };
    let mut nets = Vec::new();
    let (mut line, mut n) = (Vec::with_capacity(256), 0u64);
    while next_line(&mut reader, &mut line, n + 1)? {
        n += 1;
        match parse_line(format, &line) {
            Line::Nothing => {}
            Line::Names(list) => {
                for name in list {
                    names.push(&name)?;
                }
            }
            Line::Net(net) => {
                nets.push((net, n));
                if nets.len() > max_entries {
                    // Duplicates do not count: fold them first.
                    nets.sort_unstable_by_key(|(net, line)| (*net, *line));
                    nets.dedup_by_key(|(net, _)| *net);
                    if nets.len() > max_entries {
                        return Err(format!("more than max_entries ({max_entries}) entries"));
                    }
                }
            }
            Line::Bad(why) => {
                report.skipped += 1;
                if report.bad.len() < NAMED_BAD_LINES {
                    report.bad.push((n, why));
                }
            }
        }
    }
    let contents = match format {
        Format::Cidrs => {
            nets.sort_unstable_by_key(|(net, line)| (*net, *line));
            nets.dedup_by_key(|(net, _)| *net);
            Contents::Cidrs(CidrSet::build(nets))
        }
        _ => Contents::Names(names.build()?),
    };
    report.entries = match &contents {
        Contents::Names(s) => s.len(),
        Contents::Cidrs(s) => s.len(),
    };
    if report.entries == 0 {
        return Err(format!("no valid entry ({} lines skipped)", report.skipped));
    }
    Ok((contents, report))
}

/// The first line of `path` (in `format`) that lists `entry`, a
/// normalised name: where an entry a lookup matched came from. Read when
/// asked (`tproxyd explain`), never on a request.
pub fn line_of(path: &Path, format: Format, entry: &str) -> Option<u64> {
    let file = std::fs::File::open(path).ok()?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let (mut line, mut n) = (Vec::with_capacity(256), 0u64);
    while next_line(&mut reader, &mut line, n + 1).ok()? {
        n += 1;
        if let Line::Names(list) = parse_line(format, &line) {
            if list.iter().any(|name| name == entry) {
                return Some(n);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
