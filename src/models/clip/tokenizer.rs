//! CLIP's tokenizer as open_clip runs it: clean the text (`ftfy.fix_text`, HTML unescaping
//! twice, whitespace collapsed), lower-case, byte-level BPE, then `<start_of_text>` ids
//! `<end_of_text>`, truncated to the context length keeping the end token, padded with 0.
//!
//! The BPE itself is the `instant-clip-tokenizer` crate (the original vocabulary); the
//! cleaning in front of it is ours (`clean.rs`).

use std::sync::OnceLock;

use instant_clip_tokenizer::{Token, Tokenizer};

pub const START_OF_TEXT: u32 = 49406;
pub const END_OF_TEXT: u32 = 49407;

fn bpe() -> &'static Tokenizer {
    static BPE: OnceLock<Tokenizer> = OnceLock::new();
    BPE.get_or_init(Tokenizer::new)
}

/// Token ids of `text`, exactly `context_length` long.
pub fn tokenize(text: &str, context_length: usize) -> Vec<u32> {
    let mut ids = framed(text, context_length);
    ids.resize(context_length, 0);
    ids
}

/// The ids the published text tower (ViT-B/32, 77 positions) gets for a label, without
/// the zero padding: what the `tokenize` command and `model.tokenize` show.
pub fn label_ids(text: &str) -> Vec<u32> {
    let context = super::DaClipConfig::vit_b_32().text_cfg.expect("ViT-B/32 has a text tower").context_length;
    framed(text, context)
}

/// `<start_of_text>` ids `<end_of_text>`, truncated to `context_length` keeping the end.
fn framed(text: &str, context_length: usize) -> Vec<u32> {
    let mut ids = Vec::with_capacity(context_length);
    ids.push(START_OF_TEXT);
    ids.extend(token_ids(text).into_iter().take(context_length.saturating_sub(2)));
    ids.push(END_OF_TEXT);
    ids
}

/// The BPE ids of cleaned `text`, without start and end tokens, padding or truncation
/// (open_clip's `SimpleTokenizer.encode`).
pub fn token_ids(text: &str) -> Vec<u32> {
    let mut tokens = Vec::new();
    bpe().encode(&super::clean::clean(text), &mut tokens);
    tokens.into_iter().map(|t: Token| t.to_u16() as u32).collect()
}
