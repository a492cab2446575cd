//! CLIP's text tower (spec section 3): token and positional embeddings, causal blocks,
//! ln_final at the end-of-text token (the largest id), `@ text_projection`.

use super::transformer::Transformer;
use super::TextConfig;
use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::nn::LayerNorm;
use crate::ops;
use crate::weights::{DeviceDType, Vb};

/// The token embedding, kept on the host: a text needs a few dozen of its rows, and the
/// whole table (49408 x 768 in f32 for ViT-L/14: 145 MiB) can exceed what one GPU buffer
/// binding may hold. The rows are gathered here and uploaded, in the precision the
/// builder's dtype gives every other weight.
enum TokenTable {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

impl TokenTable {
    /// Rows `ids` of a table `width` wide, concatenated (ids checked by the caller).
    fn rows(&self, ids: &[u32], width: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(ids.len() * width);
        for &id in ids {
            let at = id as usize * width..(id as usize + 1) * width;
            match self {
                TokenTable::F32(v) => out.extend_from_slice(&v[at]),
                TokenTable::F16(v) => out.extend(v[at].iter().map(|x| x.to_f32())),
            }
        }
        out
    }
}

pub struct TextTransformer {
    token_embedding: TokenTable,
    pub positional_embedding: Tensor,
    pub transformer: Transformer,
    pub ln_final: LayerNorm,
    pub text_projection: Tensor,
    cfg: TextConfig,
}

impl TextTransformer {
    /// `vb` is the `clip.` prefix, where the text tower's tensors sit beside `visual`.
    pub fn load(vb: &Vb, cfg: &TextConfig, embed_dim: usize) -> Result<Self> {
        let (w, n) = (cfg.width, cfg.context_length);
        Ok(TextTransformer {
            token_embedding: {
                let t = vb.pp("token_embedding").host("weight", &[cfg.vocab_size, w])?;
                match vb.dtype() {
                    DeviceDType::F32 => TokenTable::F32(t.to_f32()?),
                    DeviceDType::F16 => TokenTable::F16(t.to_f16()?),
                }
            },
            positional_embedding: vb.tensor_f32("positional_embedding", &[n, w])?,
            transformer: Transformer::load(&vb.pp("transformer"), w, cfg.layers, cfg.heads)?,
            ln_final: LayerNorm::load(&vb.pp("ln_final"), w, 1e-5)?,
            text_projection: vb.tensor("text_projection", &[w, embed_dim])?,
            cfg: cfg.clone(),
        })
    }

    pub fn context_length(&self) -> usize {
        self.cfg.context_length
    }

    /// Positions the tower runs for these texts: up to the last end-of-text token (the
    /// largest id of each text).
    pub fn positions(tokens: &[Vec<u32>]) -> usize {
        tokens.iter().map(|t| eot_index(t) + 1).max().unwrap_or(0)
    }

    /// Features of tokenised texts (each `context_length` ids): [texts, embed_dim].
    pub fn forward(&self, dev: &Device, tokens: &[Vec<u32>]) -> Result<Tensor> {
        let (n, w) = (self.cfg.context_length, self.cfg.width);
        if tokens.is_empty() || tokens.iter().any(|t| t.len() != n) {
            return shape_err!("the text tower takes texts of exactly {n} token ids");
        }
        if let Some(bad) = tokens.iter().flatten().find(|&&id| id as usize >= self.cfg.vocab_size) {
            return shape_err!("token id {bad} is outside the vocabulary of {}", self.cfg.vocab_size);
        }
        // The end-of-text token has the largest id. Under the causal mask no position
        // sees a later one, so positions after the last end-of-text token cannot change
        // any output: run only the first `m` (exact; usually under 10 of the 77).
        let eot: Vec<usize> = tokens.iter().map(|t| eot_index(t)).collect();
        let m = Self::positions(tokens);
        let l = tokens.len();
        let ids: Vec<u32> = tokens.iter().flat_map(|t| &t[..m]).copied().collect();
        let x = dev.upload(&[l * m, w], &self.token_embedding.rows(&ids, w))?;
        let positions = self.positional_embedding.prefix(m * w).reshape(&[m, w])?;
        let mut x = ops::add(dev, &x.reshape(&[l, m, w])?, &positions)?;
        for block in &self.transformer.resblocks {
            x = block.forward(dev, &x, true)?;
        }
        // LayerNorm is per row, so picking the end-of-text rows first and normalising them
        // after gives the same result for less work.
        let rows: Vec<u32> = eot.iter().enumerate().map(|(i, &j)| (i * m + j) as u32).collect();
        let eot = ops::gather_rows(dev, &x.reshape(&[l * m, w])?, &dev.upload_u32(&[l], &rows)?)?;
        ops::matmul(dev, &self.ln_final.forward(dev, &eot)?, &self.text_projection)
    }
}

/// The end-of-text token's position: the first occurrence of the largest id.
fn eot_index(tokens: &[u32]) -> usize {
    tokens.iter().enumerate().max_by_key(|&(j, &id)| (id, std::cmp::Reverse(j))).map_or(0, |(j, _)| j)
}
