"""Our own PyTorch implementation of DA-CLIP and the IR-SDE restoration model, written from
the DA-CLIP architecture specification (sections 1-5). Module names and nesting follow the
published state dicts exactly, so `load_state_dict` accepts the original checkpoints and
`state_dict()` produces files in the original layout.

Used only to generate parity fixtures (make_fixtures.py); CI never runs PyTorch.
"""

import copy
import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEGRADATIONS = ["motion-blurry", "hazy", "jpeg-compressed", "low-light", "noisy",
                "raindrop", "rainy", "shadowed", "snowy", "uncompleted"]


# ----------------------------------------------------------------------------------------
# CLIP towers (open_clip layout: transformer.resblocks.{i}.{ln_1, attn, ln_2, mlp})

class ResidualAttentionBlock(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width)),
            ("gelu", nn.GELU()),  # exact (erf) GELU, not QuickGELU
            ("c_proj", nn.Linear(4 * width, width)),
        ]))

    def forward(self, x, attn_mask=None):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x, attn_mask=None, control=None):
        for block in self.resblocks:
            x = block(x, attn_mask)
            if control is not None:
                # list.pop() takes the LAST hidden: block 0 gets the controller's last layer.
                x = x + control.pop()
        return x


class ControlTransformer(nn.Module):
    """The controller's blocks plus one zero-initialised Linear per block."""

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer
        width = transformer.resblocks[0].ln_1.normalized_shape[0]
        self.zero_modules = nn.ModuleList([nn.Linear(width, width) for _ in transformer.resblocks])
        for m in self.zero_modules:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        hiddens = []
        for block, zero in zip(self.transformer.resblocks, self.zero_modules):
            x = block(x)
            hiddens.append(zero(x))  # the controller's own stream is not modified
        return x, hiddens


class VisionTransformer(nn.Module):
    def __init__(self, image_size, patch_size, width, layers, heads, output_dim):
        super().__init__()
        grid = image_size // patch_size
        self.conv1 = nn.Conv2d(3, width, patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * width ** -0.5)
        self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, width) * width ** -0.5)
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, output_dim) * width ** -0.5)

    def tokens(self, x):
        x = self.conv1(x).flatten(2).transpose(1, 2)  # [B, grid*grid, width]
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        return self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding)

    def pool(self, x):
        return self.ln_post(x[:, 0]) @ self.proj

    def forward(self, x, control=None):
        if isinstance(self.transformer, ControlTransformer):
            x, hiddens = self.transformer(self.tokens(x))
            return self.pool(x), hiddens
        return self.pool(self.transformer(self.tokens(x), control=control))


class CLIP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        v, t = cfg["vision_cfg"], cfg["text_cfg"]
        hw = v.get("head_width", 64)
        self.visual = VisionTransformer(v["image_size"], v["patch_size"], v["width"], v["layers"],
                                        v["width"] // hw, cfg["embed_dim"])
        self.context_length = t["context_length"]
        self.token_embedding = nn.Embedding(t["vocab_size"], t["width"])
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.positional_embedding = nn.Parameter(torch.randn(t["context_length"], t["width"]) * 0.01)
        self.transformer = Transformer(t["width"], t["layers"], t["heads"])
        self.ln_final = nn.LayerNorm(t["width"])
        self.text_projection = nn.Parameter(torch.randn(t["width"], cfg["embed_dim"]) * t["width"] ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_text(self, tokens):
        x = self.token_embedding(tokens) + self.positional_embedding
        n = tokens.shape[1]
        causal = torch.full((n, n), float("-inf")).triu(1)
        x = self.ln_final(self.transformer(x, attn_mask=causal))
        return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ self.text_projection


class DaCLIP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.clip = CLIP(cfg)
        self.visual = self.clip.visual  # the same module under a second name, as published
        self.visual_control = copy.deepcopy(self.clip.visual)
        self.visual_control.transformer = ControlTransformer(self.visual_control.transformer)
        self.logit_scale = copy.deepcopy(self.clip.logit_scale)

    def encode_image(self, image, control=True):
        if not control:
            return self.clip.visual(image), None
        degra_features, hiddens = self.visual_control(image)
        image_features = self.clip.visual(image, control=list(hiddens))
        return image_features, degra_features

    def control_hiddens(self, image):
        return self.visual_control(image)[1]

    def encode_text(self, tokens):
        return self.clip.encode_text(tokens)


# ----------------------------------------------------------------------------------------
# ConditionalUNet

def default_conv(din, dout, k, bias=False):
    return nn.Conv2d(din, dout, k, padding=k // 2, bias=bias)


class ChannelLayerNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x):
        eps = 1e-5
        var = torch.var(x, dim=1, unbiased=False, keepdim=True)
        mean = torch.mean(x, dim=1, keepdim=True)
        return (x - mean) / (var + eps).sqrt() * self.g


class PreNorm(nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.fn = fn
        self.norm = ChannelLayerNorm(dim)

    def forward(self, x, context=None):
        return self.fn(self.norm(x), context)


class Residual(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, context=None):
        return self.fn(x, context) + x


class Block(nn.Module):
    def __init__(self, din, dout):
        super().__init__()
        self.proj = default_conv(din, dout, 3)

    def forward(self, x, scale_shift=None):
        x = self.proj(x)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return F.silu(x)


class ResBlock(nn.Module):
    def __init__(self, din, dout, time_dim):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, dout * 2))
        self.block1 = Block(din, dout)
        self.block2 = Block(dout, dout)
        self.res_conv = default_conv(din, dout, 1) if din != dout else nn.Identity()

    def forward(self, x, t):
        scale_shift = self.mlp(t)[:, :, None, None].chunk(2, dim=1)
        h = self.block1(x, scale_shift)
        h = self.block2(h)
        return h + self.res_conv(x)


class LinearAttention(nn.Module):
    def __init__(self, dim, heads=4, dim_head=32):
        super().__init__()
        self.heads, self.scale = heads, dim_head ** -0.5
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, dim, 1), ChannelLayerNorm(dim))

    def forward(self, x, context=None):  # context is ignored, as published
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, -1, h * w) for t in self.to_qkv(x).chunk(3, dim=1))
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        v = v / (h * w)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q).reshape(b, -1, h, w)
        return self.to_out(out)


class CrossAttention(nn.Module):
    def __init__(self, query_dim, context_dim=None, heads=8, dim_head=32):
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x, context=None):
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        b, h = x.shape[0], self.heads
        q, k, v = (t.reshape(b, t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, x.shape[1], -1))


class GEGLU(nn.Module):
    def __init__(self, din, dout):
        super().__init__()
        self.proj = nn.Linear(din, dout * 2)

    def forward(self, x):
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, dim_head, context_dim):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads=heads, dim_head=dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads=heads, dim_head=dim_head)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    def __init__(self, dim, heads, dim_head=32, context_dim=512):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(32, dim, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(dim, inner, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(inner, heads, dim_head, context_dim)])
        self.proj_out = nn.Conv2d(inner, dim, 1)

    def forward(self, x, context):
        b, c, h, w = x.shape
        x_in = x
        x = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)
        for block in self.transformer_blocks:
            x = block(x, context)
        x = x.transpose(1, 2).reshape(b, -1, h, w)
        return self.proj_out(x) + x_in


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half) * -(math.log(10000) / (half - 1)))
        emb = t[:, None].float() * freqs[None]
        return torch.cat([emb.sin(), emb.cos()], dim=-1)


class ConditionalUNet(nn.Module):
    def __init__(self, in_nc=3, out_nc=3, nf=64, ch_mult=(1, 2, 4, 8), context_dim=512,
                 use_degra_context=True, use_image_context=True, downscale=False):
        super().__init__()
        self.depth = len(ch_mult)
        self.use_degra_context, self.use_image_context = use_degra_context, use_image_context
        time_dim = nf * 4
        dims = [nf * m for m in [1] + list(ch_mult)]
        self.init_conv = default_conv(in_nc * 2, nf, 7)
        # Wild-IR's `scale: 0.5` (spec section 7): the levels run at half resolution,
        # between a stride-2 4x4 conv after init_conv and a nearest x2 + 3x3 conv before
        # the last concatenation with init_conv's full-resolution output.
        self.downscale = downscale
        if downscale:
            self.downsample = nn.Conv2d(nf, nf, 4, 2, 1)
            self.upsample = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(nf, nf, 3, padding=1))
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(nf), nn.Linear(nf, time_dim), nn.GELU(),
                                      nn.Linear(time_dim, time_dim))
        if use_degra_context:
            self.prompt = nn.Parameter(torch.rand(1, time_dim))
            self.text_mlp = nn.Sequential(nn.Linear(context_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
            self.prompt_mlp = nn.Linear(time_dim, time_dim)

        def attention(dim, spatial):
            if spatial and use_image_context:
                return SpatialTransformer(dim, dim // 32, 32, context_dim)
            return LinearAttention(dim)

        self.downs, self.ups = nn.ModuleList(), nn.ModuleList()
        for i in range(self.depth):
            din, dout = dims[i], dims[i + 1]
            last = i == self.depth - 1
            self.downs.append(nn.ModuleList([
                ResBlock(din, din, time_dim),
                ResBlock(din, din, time_dim),
                Residual(PreNorm(din, attention(din, last))),
                nn.Conv2d(din, dout, 4, 2, 1) if not last else default_conv(din, dout, 3),
            ]))
            self.ups.insert(0, nn.ModuleList([
                ResBlock(dout + din, dout, time_dim),
                ResBlock(dout + din, dout, time_dim),
                Residual(PreNorm(dout, attention(dout, last))),
                nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(dout, din, 3, padding=1))
                if i != 0 else default_conv(dout, din, 3),
            ]))
        mid = dims[-1]
        self.mid_block1 = ResBlock(mid, mid, time_dim)
        self.mid_attn = Residual(PreNorm(mid, attention(mid, True)))
        self.mid_block2 = ResBlock(mid, mid, time_dim)
        self.final_res_block = ResBlock(nf * 2, nf, time_dim)
        self.final_conv = nn.Conv2d(nf, out_nc, 3, 1, 1)

    def time_embedding(self, t):
        return self.time_mlp(t)

    def prompt_embedding(self, text_context):
        p = F.softmax(self.text_mlp(text_context), dim=1) * self.prompt
        return self.prompt_mlp(p)

    def forward(self, xt, cond, time, text_context=None, image_context=None):
        if not torch.is_tensor(time):
            time = torch.tensor([time], dtype=torch.float32)
        x = torch.cat([xt - cond, cond], dim=1)
        H, W = x.shape[2:]
        m = 2 ** self.depth
        x = F.pad(x, (0, (m - W % m) % m, 0, (m - H % m) % m), mode="reflect")
        x = self.init_conv(x)
        x_ = x.clone()
        if self.downscale:
            x = self.downsample(x)
        t = self.time_embedding(time)
        if self.use_degra_context:
            t = t + self.prompt_embedding(text_context)
        context = image_context.unsqueeze(1) if self.use_image_context else None
        h = []
        for b1, b2, attn, down in self.downs:
            x = b1(x, t)
            h.append(x)
            x = b2(x, t)
            x = attn(x, context)
            h.append(x)
            x = down(x)
        x = self.mid_block1(x, t)
        x = self.mid_attn(x, context)
        x = self.mid_block2(x, t)
        for b1, b2, attn, up in self.ups:
            x = b1(torch.cat([x, h.pop()], dim=1), t)
            x = b2(torch.cat([x, h.pop()], dim=1), t)
            x = attn(x, context)
            x = up(x)
        if self.downscale:
            x = self.upsample(x)
        x = self.final_res_block(torch.cat([x, x_], dim=1), t)
        return self.final_conv(x)[..., :H, :W]


# ----------------------------------------------------------------------------------------
# IR-SDE (posterior sampling), float32 as published

class IRSDE:
    def __init__(self, max_sigma=50 / 255, T=100, eps=0.005):
        self.T, self.max_sigma = T, max_sigma
        n = T + 2
        k = torch.linspace(0, n, n + 1, dtype=torch.float32)
        a = torch.cos(((k / n) + 0.008) / (1 + 0.008) * math.pi * 0.5) ** 2
        a = a / a[0]
        self.thetas = 1 - a[1:-1]
        self.sigmas = torch.sqrt(max_sigma ** 2 * 2 * self.thetas)
        self.thetas_cumsum = torch.cumsum(self.thetas, dim=0) - self.thetas[0]
        self.dt = -1 / self.thetas_cumsum[-1] * math.log(eps)
        self.sigma_bars = torch.sqrt(max_sigma ** 2 * (1 - torch.exp(-2 * self.thetas_cumsum * self.dt)))

    def x0_from_noise(self, x, mu, t, noise):
        return (x - mu - self.sigma_bars[t] * noise) * torch.exp(self.thetas_cumsum[t] * self.dt) + mu

    def posterior_mean_std(self, x, x0, mu, t):
        A = torch.exp(-self.thetas[t] * self.dt)
        B = torch.exp(-self.thetas_cumsum[t] * self.dt)
        C = torch.exp(-self.thetas_cumsum[t - 1] * self.dt)
        mean = A * (1 - C ** 2) / (1 - B ** 2) * (x - mu) + C * (1 - A ** 2) / (1 - B ** 2) * (x0 - mu) + mu
        A2 = torch.exp(-2 * self.thetas[t] * self.dt)
        B2 = torch.exp(-2 * self.thetas_cumsum[t] * self.dt)
        C2 = torch.exp(-2 * self.thetas_cumsum[t - 1] * self.dt)
        var = (1 - A2) * (1 - C2) / (1 - B2)
        std = torch.exp(0.5 * torch.log(torch.clamp(var, min=1e-20 * self.dt))) * self.max_sigma
        return mean, std

    def reverse_sde_step(self, x, mu, t, noise, z):
        """The "sde" mode's Euler-Maruyama step t -> t-1, with the given standard normal z."""
        score = -noise / self.sigma_bars[t]
        drift = (self.thetas[t] * (mu - x) - self.sigmas[t] ** 2 * score) * self.dt
        return x - drift - self.sigmas[t] * math.sqrt(self.dt) * z
