//! The text cleaning open_clip does before CLIP's BPE: `ftfy.fix_text` with its default
//! settings, Python's `html.unescape` twice, whitespace collapsed (Python's idea of
//! whitespace); the BPE lower-cases. Ours, written from ftfy's documentation and checked
//! against the original on a corpus (tests/tokenizer.rs), with the data (HTML5 names,
//! codec tables) generated from Python's standard library into `generated/text.rs`, and
//! ftfy's test for mojibake as tables measured on ftfy's behaviour (`generated/badness.rs`).
//!
//! `fix_text` works line by line, each line fixed until nothing changes: ftfy's HTML
//! entities (only those ending in `;`, plus upper-cased Latin ones such as `&EACUTE;`,
//! and not at all once a line contained `<`), mojibake (in a line ftfy takes for
//! mojibake only: UTF-8 read through one of ten single-byte codecs, repaired where the
//! whole line re-encoded in that codec is UTF-8, else in runs read through Latin-1 or
//! Windows-1252), C1 controls read as Windows-1252, Latin ligatures and digraphs, full-
//! and half-width forms, curly quotes, line breaks, terminal escapes, invisible control
//! characters, then NFC. ftfy's rarer repairs (a NBSP turned into a space inside
//! mojibake, CESU-8, lossy `\u{fffd}` sequences) are not made.

use std::collections::HashMap;
use std::sync::OnceLock;

use unicode_normalization::UnicodeNormalization;

use super::generated::badness::{BAD_FIRST, BAD_LATER, CLASS_OF, END, EXCEPTIONS, FRAGMENT_BLOCKERS, OTHER, REPRESENTATIVE, SPACE, WORD};
use super::generated::text::{CODECS, HTML5_ENTITIES};

/// The cleaned text, before the BPE's lower-casing.
pub(super) fn clean(text: &str) -> String {
    let text = html_unescape(&html_unescape(&fix_text(text)));
    text.split(is_python_space).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Python's `str.isspace`, which `str.split()` splits on: Unicode's White_Space plus the
/// four ASCII information separators.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut entities = true;
    for line in text.split_inclusive('\n') {
        // ftfy takes text with a `<` for HTML, whose entities are the HTML's business:
        // from that line on it leaves them.
        entities &= !line.contains('<');
        let mut line = line.to_string();
        loop {
            let before = line.clone();
            if entities {
                line = unescape_entities(&line);
            }
            line = fix_encoding(&line);
            line = fix_characters(&line);
            line = line.nfc().collect();
            if line == before {
                break;
            }
        }
        out.push_str(&line);
    }
    out
}

/// C1 controls, ligatures, character widths, quotes, line breaks, terminal escapes and
/// control characters, in one pass (none of them makes what another one changes).
fn fix_characters(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            // A terminal escape `ESC [ digits-and-semicolons letter` goes whole.
            '\u{1b}' if chars.get(i) == Some(&'[') => {
                let params = chars[i + 1..].iter().take_while(|c| c.is_ascii_digit() || **c == ';').count();
                if chars.get(i + 1 + params).is_some_and(char::is_ascii_alphabetic) {
                    i += params + 2;
                }
            }
            '\r' => {
                i += (chars.get(i) == Some(&'\n')) as usize;
                out.push('\n');
            }
            // C1 controls (U+0085 too) first read as Windows-1252, as ftfy's order has it.
            '\u{80}'..='\u{9f}' => out.push(CODECS[1].1[c as usize - 0x80]),
            '\u{2028}' | '\u{2029}' => out.push('\n'),
            '\u{2bc}' | '\u{2018}'..='\u{201b}' => out.push('\''),
            '\u{201c}'..='\u{201f}' => out.push('"'),
            '\u{3000}' => out.push(' '),
            '\u{ff01}'..='\u{ffef}' => out.extend(c.to_string().nfkc()),
            _ if is_invisible_control(c) => {}
            _ => match ligature(c) {
                Some(s) => out.push_str(s),
                None => out.push(c),
            },
        }
    }
    out
}

/// ASCII controls but tab, line feed, form feed and carriage return; Arabic's deprecated
/// format controls; the byte order mark; interlinear annotation and the object
/// replacement character.
fn is_invisible_control(c: char) -> bool {
    matches!(c, '\0'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}' | '\u{206a}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffc}')
}

/// Latin ligatures and the digraphs of legacy encodings, taken apart.
fn ligature(c: char) -> Option<&'static str> {
    Some(match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "\u{2bc}n",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return None,
    })
}

/// Mojibake repaired until none is left, in text ftfy takes for mojibake (`is_bad`): the
/// whole text, where it re-encodes in one of the codecs (tried in order) to valid UTF-8;
/// else each run of characters that does through Latin-1 or Windows-1252.
fn fix_encoding(text: &str) -> String {
    let mut text = text.to_string();
    loop {
        let fixed = fix_encoding_once(&text);
        if fixed == text {
            return text;
        }
        text = fixed;
    }
}

fn fix_encoding_once(text: &str) -> String {
    if text.is_ascii() {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    if !is_bad(&chars) {
        return text.to_string();
    }
    for (_, table) in &CODECS {
        let bytes: Option<Vec<u8>> = chars.iter().map(|&c| encode(table, c)).collect();
        if let Some(Ok(fixed)) = bytes.map(String::from_utf8) {
            return fixed;
        }
    }
    // Runs of UTF-8 sequences read as Latin-1 or Windows-1252 (at each character the first
    // of the two in which one starts there), except after the characters after which ftfy
    // leaves them (mostly what reads as a continuation byte: the run may be the tail of a
    // longer sequence).
    let sequence_at = |i: usize| CODECS[..2].iter().find_map(|(_, table)| utf8_sequence(table, &chars[i..]));
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let mut run = (String::new(), i);
        if i == 0 || !FRAGMENT_BLOCKERS.contains(chars[i - 1]) {
            while let Some((c, len)) = chars.get(run.1).filter(|c| !c.is_ascii()).and_then(|_| sequence_at(run.1)) {
                run.0.push(c);
                run.1 += len;
            }
        }
        if run.0.is_empty() {
            out.push(chars[i]);
            i += 1;
        } else {
            out.push_str(&run.0);
            i = run.1;
        }
    }
    out
}

/// ftfy's test for text that looks like mojibake (`is_bad`), from tables measured on ftfy
/// (`generated/badness.rs`): a text is bad where one of its windows of three characters (the
/// last ones running past the end) is, each character taken by its class, except for the
/// windows of characters listed apart.
fn is_bad(chars: &[char]) -> bool {
    // A character's class, and what it is looked up as among the exceptions (ASCII and
    // unlisted characters by their class's representative).
    let class = |c: Option<&char>| -> (u8, char) {
        let Some(&c) = c else { return (END, '\0') };
        let k = match CLASS_OF.binary_search_by_key(&c, |&(ch, _)| ch) {
            Ok(i) if !c.is_ascii() => return (CLASS_OF[i].1, c),
            Ok(i) => CLASS_OF[i].1,
            Err(_) if is_python_space(c) => SPACE,
            Err(_) if c.is_alphanumeric() || c == '_' => WORD,
            Err(_) => OTHER,
        };
        (k, REPRESENTATIVE[k as usize])
    };
    let classes = END as usize + 1;
    (0..chars.len()).any(|i| {
        let [a, b, c] = [class(chars.get(i)), class(chars.get(i + 1)), class(chars.get(i + 2))];
        let key = (i > 0, a.1, b.1, c.1);
        if let Ok(e) = EXCEPTIONS.binary_search_by(|&(later, a, b, c, _)| (later, a, b, c).cmp(&key)) {
            return EXCEPTIONS[e].4;
        }
        let bit = (a.0 as usize * classes + b.0 as usize) * classes + c.0 as usize;
        let table = if i > 0 { &BAD_LATER } else { &BAD_FIRST };
        table[bit / 64] >> (bit % 64) & 1 == 1
    })
}

/// `c`'s byte in a codec whose upper half is `table` (ASCII is itself).
fn encode(table: &[char; 128], c: char) -> Option<u8> {
    if c.is_ascii() {
        return Some(c as u8);
    }
    table.iter().position(|&t| t == c).map(|p| 0x80 + p as u8)
}

/// The character whose UTF-8 bytes `chars` start with, read through the codec, and how
/// many characters that took; multi-byte sequences only.
fn utf8_sequence(table: &[char; 128], chars: &[char]) -> Option<(char, usize)> {
    let lead = encode(table, *chars.first()?)?;
    let len = match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    let bytes: Option<Vec<u8>> = chars.get(..len)?.iter().map(|&c| encode(table, c)).collect();
    let s = String::from_utf8(bytes?).ok()?;
    let c = s.chars().next()?;
    (s.chars().count() == 1).then_some((c, len))
}

/// ftfy's entity decoding: `&name;` of the HTML5 names that end in `;`, `&NAME;` for
/// those whose name is lower case (their value upper-cased, where the upper-cased name is
/// no entity itself), and numeric references that Python's `html.unescape` decodes
/// whole; anything else stays.
fn unescape_entities(text: &str) -> String {
    static UPPER: OnceLock<HashMap<String, String>> = OnceLock::new();
    let upper = UPPER.get_or_init(|| {
        HTML5_ENTITIES
            .iter()
            .filter_map(|&(name, value)| {
                let name = name.strip_suffix(';')?;
                let upper = format!("&{};", name.to_uppercase());
                (name == name.to_lowercase() && html_unescape(&upper) == upper).then(|| (upper, value.to_uppercase()))
            })
            .collect()
    });
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        // `&#?[0-9A-Za-z]{1,24};`
        let body = rest[1..].strip_prefix('#').unwrap_or(&rest[1..]);
        let name_len = body.bytes().take_while(u8::is_ascii_alphanumeric).count();
        let len = rest.len() - body.len() + name_len;
        if (1..=24).contains(&name_len) && rest[len..].starts_with(';') {
            let entity = &rest[..len + 1];
            let decoded = if let Ok(i) = HTML5_ENTITIES.binary_search_by(|(n, _)| n.cmp(&&entity[1..])) {
                Some(HTML5_ENTITIES[i].1.to_string())
            } else if let Some(v) = upper.get(entity) {
                Some(v.clone())
            } else if entity.starts_with("&#") {
                Some(html_unescape(entity)).filter(|v| !v.contains(';'))
            } else {
                None
            };
            out.push_str(decoded.as_deref().unwrap_or(entity));
            rest = &rest[len + 1..];
        } else {
            out.push('&');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Python's `html.unescape`: numeric references (with the HTML standard's replacements
/// for invalid ones) and named ones, also without `;` where the longest name that starts
/// the text is one of HTML5's.
fn html_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(num) = rest.strip_prefix('#') {
            let (digits, radix, skip) = match num.strip_prefix(['x', 'X']) {
                Some(hex) => (hex.bytes().take_while(u8::is_ascii_hexdigit).count(), 16, 2),
                None => (num.bytes().take_while(u8::is_ascii_digit).count(), 10, 1),
            };
            if digits == 0 {
                out.push('&');
                continue;
            }
            let value = rest[skip..skip + digits].chars().fold(0u64, |v, d| (v * radix as u64 + d.to_digit(radix).unwrap() as u64).min(u32::MAX as u64));
            numeric_reference(value as u32, &mut out);
            rest = &rest[skip + digits..];
            rest = rest.strip_prefix(';').unwrap_or(rest);
            continue;
        }
        // `[^\t\n\f <&#;]{1,32};?`
        let name: String = rest.chars().take_while(|c| !matches!(c, '\t' | '\n' | '\u{c}' | ' ' | '<' | '&' | '#' | ';')).take(32).collect();
        if name.is_empty() {
            out.push('&');
            continue;
        }
        let with_semicolon = rest[name.len()..].starts_with(';');
        let reference = if with_semicolon { format!("{name};") } else { name.clone() };
        rest = &rest[reference.len()..];
        let lookup = |n: &str| HTML5_ENTITIES.binary_search_by(|(e, _)| e.cmp(&n)).ok().map(|i| HTML5_ENTITIES[i].1);
        if let Some(v) = lookup(&reference) {
            out.push_str(v);
            continue;
        }
        let chars: Vec<(usize, char)> = reference.char_indices().collect();
        let prefix = (2..chars.len()).rev().find_map(|x| lookup(&reference[..chars[x].0]).map(|v| (v, chars[x].0)));
        match prefix {
            Some((v, end)) => {
                out.push_str(v);
                out.push_str(&reference[end..]);
            }
            None => {
                out.push('&');
                out.push_str(&reference);
            }
        }
    }
    out.push_str(rest);
    out
}

/// `&#value;` as Python decodes it: the standard's replacements for NUL, CR and the
/// Windows-1252 range, U+FFFD for surrogates and values past Unicode, nothing for
/// noncharacters and most controls.
fn numeric_reference(value: u32, out: &mut String) {
    match value {
        0 => out.push('\u{fffd}'),
        0x0d => out.push('\r'),
        0x80..=0x9f => out.push(CODECS[1].1[value as usize - 0x80]),
        0xd800..=0xdfff | 0x11_0000.. => out.push('\u{fffd}'),
        0x1..=0x8 | 0xb | 0xe..=0x1f | 0x7f | 0xfdd0..=0xfdef => {}
        v if v & 0xfffe == 0xfffe => {}
        v => out.push(char::from_u32(v).unwrap()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables against ftfy's own verdicts on 10,000 random strings, mostly of the
    /// characters mojibake is made of (tests/fixtures/ftfy_is_bad.json, written by
    /// tests/reference/make_badness_table.py).
    #[test]
    fn is_bad_agrees_with_ftfy() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ftfy_is_bad.json");
        let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cases = fixture["cases"].as_array().unwrap();
        let differ: Vec<(&str, bool)> = cases
            .iter()
            .map(|case| (case[0].as_str().unwrap(), case[1].as_bool().unwrap()))
            .filter(|&(text, bad)| is_bad(&text.chars().collect::<Vec<_>>()) != bad)
            .collect();
        for (text, bad) in differ.iter().take(20) {
            println!("ftfy says {bad} for {text:?}");
        }
        println!("is_bad: {} of {} verdicts as ftfy's", cases.len() - differ.len(), cases.len());
        assert!(cases.len() >= 10_000);
        assert!(differ.len() * 1000 <= cases.len(), "{} of {} verdicts differ from ftfy's", differ.len(), cases.len());
    }
}
