//! The house's size rule: a source file under `src/` is at most 400 lines
//! and a function at most 80, test code left out.
//!
//! How it counts, on the text (no parser):
//! - every `.rs` file under `src/`, except files named `tests.rs` (a
//!   module's tests go there once they would push it over the limit);
//! - a file's length is all its lines, an inline test module included;
//! - for functions, a file's trailing test module (a column-0
//!   `#[cfg(test)]` followed by `mod tests {` whose block runs to the end
//!   of the file) is cut off first;
//! - comments, string, byte-string, raw-string and char literals are
//!   blanked (newlines kept), so braces in them do not count;
//! - a function is `fn NAME` (not `fn(` of a pointer type) up to the first
//!   `{` or `;` outside parentheses and brackets: a `;` first means no
//!   body; otherwise its length is the lines from the `fn` line to the line
//!   of the matching `}`, both counted (signature, blank lines and comments
//!   too). Nested functions count on their own and within their outer
//!   function.

use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 400;
const MAX_FN_LINES: usize = 80;

/// Files over a limit, each a path under `src/`. Remove an entry once its
/// file fits (the test says so when one does); it is meant to stay empty.
const PENDING: &[&str] = &[];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs")
            && p.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(p);
        }
    }
}

/// `text` with comments and literals replaced by spaces, newlines kept.
fn blank(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let skip = |out: &mut String, from: usize, to: usize| {
        for &ch in &c[from..to.min(c.len())] {
            out.push(if ch == '\n' { '\n' } else { ' ' });
        }
    };
    while i < c.len() {
        let ident_before = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
        let end = match c[i] {
            '/' if c.get(i + 1) == Some(&'/') => find(&c, i, "\n"),
            '/' if c.get(i + 1) == Some(&'*') => block_comment_end(&c, i),
            '"' => string_end(&c, i + 1),
            'r' | 'b' if !ident_before => raw_string_end(&c, i).unwrap_or(i + 1),
            '\'' => char_end(&c, i).unwrap_or(i + 1),
            _ => i + 1,
        };
        if end == i + 1 {
            out.push(c[i]);
        } else {
            skip(&mut out, i, end);
        }
        i = end;
    }
    out
}

/// Index just past the first `pat` at or after `from` (or the end).
fn find(c: &[char], from: usize, pat: &str) -> usize {
    let p: Vec<char> = pat.chars().collect();
    (from..c.len())
        .find(|&i| c[i..].starts_with(&p))
        .map_or(c.len(), |i| i + p.len())
}

fn block_comment_end(c: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < c.len() {
        if c[i..].starts_with(&['/', '*']) {
            depth += 1;
            i += 2;
        } else if c[i..].starts_with(&['*', '/']) {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    c.len()
}

/// Past the closing quote of a string whose body starts at `i`.
fn string_end(c: &[char], mut i: usize) -> usize {
    while i < c.len() {
        match c[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    c.len()
}

/// `r"…"`, `r#"…"#`, `br"…"`, `b"…"` at `i`: past its end; else `None`.
fn raw_string_end(c: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if c[j] == 'b' {
        j += 1;
        if c.get(j) == Some(&'"') {
            return Some(string_end(c, j + 1));
        }
        if c.get(j) == Some(&'\'') {
            return char_end(c, j);
        }
    }
    if c.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = c[j..].iter().take_while(|&&h| h == '#').count();
    if c.get(j + hashes) != Some(&'"') {
        return None;
    }
    let close: String = std::iter::once('"')
        .chain(std::iter::repeat_n('#', hashes))
        .collect();
    Some(find(c, j + hashes + 1, &close))
}

/// A char literal at `i` (`'x'`, `'\n'`, `'\u{..}'`): past its end; a
/// lifetime or label (`'a`) is not one: `None`.
fn char_end(c: &[char], i: usize) -> Option<usize> {
    match (c.get(i + 1), c.get(i + 2)) {
        (Some('\\'), _) => Some(find(c, i + 3, "'")),
        (Some(_), Some('\'')) => Some(i + 3),
        _ => None,
    }
}

/// The line index where the trailing test module starts, if the file ends
/// with one.
fn test_module_start(lines: &[&str], code: &[&str]) -> Option<usize> {
    let ends_here = |at: usize| {
        let next = lines[at + 1..].iter().position(|l| !l.trim().is_empty())? + at + 1;
        if !lines[next].starts_with("mod tests {") {
            return None;
        }
        let mut depth = 0i64;
        for (n, l) in code.iter().enumerate().skip(next) {
            depth += l.matches('{').count() as i64 - l.matches('}').count() as i64;
            if depth == 0 {
                return code[n + 1..]
                    .iter()
                    .all(|l| l.trim().is_empty())
                    .then_some(at);
            }
        }
        None
    };
    (0..lines.len())
        .filter(|&at| lines[at].trim_end() == "#[cfg(test)]")
        .find_map(ends_here)
}

/// Where the body of the `fn` at `i` opens: the first `{` outside
/// parentheses and brackets (`-> [u8; 4]` has a `;`); `None` for a
/// declaration without a body (a `;` first).
fn body_start(c: &[char], i: usize) -> Option<usize> {
    let mut nested = 0;
    for (j, &ch) in c.iter().enumerate().skip(i) {
        match ch {
            '(' | '[' => nested += 1,
            ')' | ']' => nested -= 1,
            '{' if nested == 0 => return Some(j),
            ';' if nested == 0 => return None,
            _ => {}
        }
    }
    None
}

/// (name, first line, length in lines) of every function in `code`.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let c: Vec<char> = code.chars().collect();
    let line_of = |i: usize| c[..i].iter().filter(|&&ch| ch == '\n').count();
    let word = |i: usize| i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_');
    let mut out = Vec::new();
    for i in 0..c.len() {
        if !(c[i..].starts_with(&['f', 'n', ' ']) && word(i)) {
            continue;
        }
        let name: String = c[i + 3..]
            .iter()
            .skip_while(|ch| ch.is_whitespace())
            .take_while(|ch| ch.is_alphanumeric() || **ch == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        let Some(open) = body_start(&c, i) else {
            continue;
        };
        let mut depth = 0;
        for (j, &ch) in c.iter().enumerate().skip(open) {
            depth += match ch {
                '{' => 1,
                '}' => -1,
                _ => 0,
            };
            if depth == 0 {
                out.push((name, line_of(i) + 1, line_of(j) - line_of(i) + 1));
                break;
            }
        }
    }
    out
}

/// What is over a limit in `text`, one line per finding.
fn oversized(text: &str) -> Vec<String> {
    let code = blank(text);
    let lines: Vec<&str> = text.lines().collect();
    let code_lines: Vec<&str> = code.lines().collect();
    let len = test_module_start(&lines, &code_lines).unwrap_or(lines.len());
    let kept: String = code_lines[..len].join("\n");
    let mut out = Vec::new();
    if lines.len() > MAX_FILE_LINES {
        out.push(format!("{} lines (max {MAX_FILE_LINES})", lines.len()));
    }
    for (name, at, n) in functions(&kept) {
        if n > MAX_FN_LINES {
            out.push(format!(
                "fn {name} (line {at}): {n} lines (max {MAX_FN_LINES})"
            ));
        }
    }
    out
}

#[test]
fn source_files_and_functions_stay_small() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let (mut over, mut fits) = (Vec::new(), Vec::new());
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        let found = oversized(&std::fs::read_to_string(f).unwrap());
        match (found.is_empty(), PENDING.contains(&rel.as_str())) {
            (false, false) => over.push(format!("src/{rel}: {}", found.join("; "))),
            (true, true) => fits.push(rel),
            _ => {}
        }
    }
    for p in PENDING {
        assert!(src.join(p).exists(), "PENDING names src/{p}, which is gone");
    }
    assert!(over.is_empty(), "over the limits:\n{}", over.join("\n"));
    assert!(
        fits.is_empty(),
        "these fit now: take them off PENDING: {fits:?}"
    );
}

#[test]
fn the_scanner_counts_what_it_says() {
    let body = "    let x = 1;\n".repeat(79);
    let f = |n: &str| format!("fn {n}() {{\n{body}}}\n");
    // 81 lines from `fn` to `}`: over; 80 lines fit.
    let text = format!("{}{}", f("long"), "fn short() {\n}\n");
    assert_eq!(
        oversized(&text),
        ["fn long (line 1): 81 lines (max 80)"],
        "{text}"
    );
    let fits = format!("fn ok() {{\n{}}}\n", "    x();\n".repeat(78));
    assert!(oversized(&fits).is_empty());
    // Braces in strings, chars, comments and raw strings do not count;
    // declarations without a body and fn pointer types are not functions.
    let tricky = "fn a() {\n    let s = \"{{\"; let c = '{'; // {\n    let r = r#\"}\"#; /* { */\n}\ntrait T { fn b(&self); }\nstruct S { f: fn(u8) -> u8 }\nfn e() -> [u8; 2] { [b'}', b'\\''] }\n";
    let found = functions(&blank(tricky));
    let want = [("a".to_string(), 1, 4), ("e".to_string(), 7, 1)];
    assert_eq!(found, want, "{found:?}");
    // A trailing test module's functions are left out; its lines count.
    let long_test = format!("fn x() {{}}\n\n#[cfg(test)]\nmod tests {{\n{}}}\n", f("t"));
    assert!(oversized(&long_test).is_empty());
    let pad = 401 - long_test.lines().count();
    let file = format!("{}{long_test}", "// line\n".repeat(pad));
    assert_eq!(oversized(&file), ["401 lines (max 400)"]);
    // A test module with code after it is not trailing: it counts.
    assert_eq!(oversized(&format!("{long_test}fn y() {{}}\n")).len(), 1);
}
