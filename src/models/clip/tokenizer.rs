//! CLIP's tokenizer as open_clip runs it: clean the text (`ftfy.fix_text`, HTML unescaping
//! twice, whitespace collapsed), lower-case, byte-level BPE, then `<start_of_text>` ids
//! `<end_of_text>`, truncated to the context length keeping the end token, padded with 0.
//!
//! The BPE itself is the `instant-clip-tokenizer` crate (the original vocabulary); the
//! cleaning in front of it is ours and covers what ftfy changes in ordinary text: curly
//! quotes, Latin ligatures, full-width ASCII, HTML entities, and NFC normalisation
//! (decomposed accents, as macOS file names and some keyboards produce them, composed).
//! (The ellipsis character stays: the original keeps it, and so does the vocabulary.)
//! Not covered: ftfy's repair of mojibake.

use std::sync::OnceLock;

use instant_clip_tokenizer::{Token, Tokenizer};
use unicode_normalization::UnicodeNormalization;

pub const START_OF_TEXT: u32 = 49406;
pub const END_OF_TEXT: u32 = 49407;

fn bpe() -> &'static Tokenizer {
    static BPE: OnceLock<Tokenizer> = OnceLock::new();
    BPE.get_or_init(Tokenizer::new)
}

/// Token ids of `text`, exactly `context_length` long.
pub fn tokenize(text: &str, context_length: usize) -> Vec<u32> {
    let mut tokens = Vec::new();
    bpe().encode(&clean(text), &mut tokens);
    let mut ids = Vec::with_capacity(context_length);
    ids.push(START_OF_TEXT);
    ids.extend(tokens.into_iter().map(|t: Token| t.to_u16() as u32).take(context_length.saturating_sub(2)));
    ids.push(END_OF_TEXT);
    ids.resize(context_length, 0);
    ids
}

fn clean(text: &str) -> String {
    let text = html_unescape(&html_unescape(&fix_text(text)));
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The parts of `ftfy.fix_text` (default settings) that change ordinary text.
fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.nfc() {
        match c {
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' => out.push('\''),
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' => out.push('"'),
            '\u{FB00}' => out.push_str("ff"),
            '\u{FB01}' => out.push_str("fi"),
            '\u{FB02}' => out.push_str("fl"),
            '\u{FB03}' => out.push_str("ffi"),
            '\u{FB04}' => out.push_str("ffl"),
            '\u{3000}' => out.push(' '),
            '\u{FF01}'..='\u{FF5E}' => out.push(char::from_u32(c as u32 - 0xFF01 + 0x21).unwrap()),
            _ => out.push(c),
        }
    }
    out
}

/// Python's `html.unescape` for numeric references and the named entities text meets.
fn html_unescape(text: &str) -> String {
    const NAMED: &[(&str, &str)] = &[
        ("amp", "&"), ("lt", "<"), ("gt", ">"), ("quot", "\""), ("apos", "'"), ("nbsp", "\u{a0}"),
        ("copy", "\u{a9}"), ("reg", "\u{ae}"), ("hellip", "\u{2026}"), ("mdash", "\u{2014}"),
        ("ndash", "\u{2013}"), ("lsquo", "\u{2018}"), ("rsquo", "\u{2019}"), ("ldquo", "\u{201c}"),
        ("rdquo", "\u{201d}"), ("deg", "\u{b0}"), ("eacute", "\u{e9}"), ("times", "\u{d7}"),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let body = &rest[1..];
        let end = body.find(';').filter(|&e| e <= 32);
        let decoded = end.and_then(|e| {
            let name = &body[..e];
            let c = if let Some(num) = name.strip_prefix('#') {
                let v = match num.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => num.parse().ok(),
                };
                v.and_then(char::from_u32).map(String::from)
            } else {
                NAMED.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
            };
            c.map(|c| (c, e + 2))
        });
        match decoded {
            Some((c, len)) => {
                out.push_str(&c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
