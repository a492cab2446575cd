"""Writes a parity-fixture directory (format: docs/development.md, "Fixtures and the
PyTorch reference") for a DA-CLIP + UNet with seeded random weights, using our PyTorch
reference.

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch numpy pillow safetensors open_clip_torch
    /tmp/torchenv/bin/python tests/reference/make_fixtures.py tests/fixtures/tiny
    /tmp/torchenv/bin/python tests/reference/make_fixtures.py /tmp/full --full
    /tmp/torchenv/bin/python tests/reference/make_fixtures.py tests/fixtures/wild-reduced --wild-reduced
    /tmp/torchenv/bin/python tests/reference/make_fixtures.py /tmp/wild-full --wild-full
    /tmp/torchenv/bin/python tests/reference/make_fixtures.py /tmp/wild --wild-checkpoints

The default is the tiny configuration committed in tests/fixtures/tiny; `--full` uses the
published architecture (ViT-B/32 DA-CLIP, nf 64 UNet: about 1.2 GB of checkpoints, never
committed). open_clip_torch is used only for its tokenizer (the original's token ids).
Besides the documented files, the directory gets `checkpoint_digest.json` (per tensor:
shape, sum, sum of squares, first values), which the weights tests use to check the
checkpoint reader against PyTorch's own.

`--wild-reduced` is the Wild-IR pair (spec section 7) at its real widths, vocabulary and
patch size but fewer layers: its checkpoints (about 600 MB) are too large to commit, so
its weights are the crate's seeded random ones (`random_safetensors`: SplitMix64 per
tensor name, rounded to f32 and then f16), written again here with numpy, and the directory holds
`random_weights.json` (seeds and UNet config) in place of the .pt/.pth; the parity test
makes the same weights from it. `--wild-full` is the same at full depth (24 image and
12 text layers: the published Wild-IR architecture; about 10 GB of memory and minutes in
float64, never committed). `--wild-checkpoints` writes the full-size Wild-IR pair in
the original's format (`wild-daclip_ViT-L-14.pt`, 3.0 GB, and `wild-ir.pth`) with
PyTorch's default initialisation, for the streaming load's memory bench; no fixtures.
"""

import json
import math
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from daclip_reference import (CLIP_MEAN, CLIP_STD, DEGRADATIONS, ConditionalUNet, DaCLIP, IRSDE)  # noqa: E402

CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
UNET_CONFIG = dict(in_nc=3, out_nc=3, nf=16, ch_mult=(1, 1, 2, 2), context_dim=32,
                   use_degra_context=True, use_image_context=True)
FULL_CLIP_CONFIG = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
}
FULL_UNET_CONFIG = dict(in_nc=3, out_nc=3, nf=64, ch_mult=(1, 2, 4, 8), context_dim=512,
                        use_degra_context=True, use_image_context=True)
WILD_CLIP_CONFIG = {
    "embed_dim": 768,
    "vision_cfg": {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12},
}
WILD_UNET_CONFIG = dict(in_nc=3, out_nc=3, nf=64, ch_mult=(1, 2, 4, 8), context_dim=768,
                        use_degra_context=False, use_image_context=True, downscale=True)
# The reduced-depth twin of the pair above, for the committed parity set.
WILD_REDUCED_CLIP_CONFIG = {
    "embed_dim": 768,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 1024, "patch_size": 14, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 2},
}
WILD_SEEDS = {"daclip_seed": 11, "unet_seed": 12}
H, W = 48, 40          # the main input (a multiple of 16, as the UNet keys' shapes show)
ODD_H, ODD_W = 37, 29  # an odd size: reflect padding and the final crop


def randomise(model, gen):
    """Seeded weights with every parameter non-trivial: norms' gains near 1 and biases near 0
    but not equal, the controller's zero modules and proj_out non-zero."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = p[0].numel() if p.dim() > 1 else p.numel()
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("g",) or (leaf == "weight" and p.dim() == 1):  # LayerNorm/GroupNorm/channel LN gains
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif leaf == "bias":
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "token_embedding" in name:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / max(fan_in, 1) ** 0.5)


MASK = (1 << 64) - 1


def splitmix_uniform(seed, name, n):
    """The crate's `SplitMix::for_tensor(seed, name)` stream: n uniforms in [0, 1)."""
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK
    state = ((seed * 0x9E3779B97F4A7C15) & MASK) ^ h
    with np.errstate(over="ignore"):
        z = np.uint64(state) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def seeded_weights(model, seed):
    """Fills every tensor of the state dict (the `visual.*` aliases through their
    `clip.visual.*` twins) as `random_safetensors(spec, seed, no zeros)` does."""
    state = model.state_dict()
    with torch.no_grad():
        for name, t in state.items():
            if name.startswith("visual.") and "clip." + name in state:
                continue
            shape = tuple(t.shape)
            n = int(np.prod(shape, dtype=np.int64))
            u = 2.0 * splitmix_uniform(seed, name, n) - 1.0
            if sum(d > 1 for d in shape) > 1:
                v = u * math.sqrt(3.0 * shape[0] / n)
            elif (name.endswith(".weight") and len(shape) == 1) or name.endswith(".g"):
                v = 1.0 + 0.05 * u
            else:
                v = 0.05 * u
            t.copy_(torch.from_numpy(v.astype(np.float32).astype(np.float16).astype(np.float32)).reshape(shape))


def clip_preprocess(u8, size):
    """torchvision Resize(size, BICUBIC) on a PIL image (antialiased), CenterCrop(size)."""
    img = Image.fromarray(u8)
    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    img = img.resize((nw, nh), Image.BICUBIC)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return np.asarray(img)[top:top + size, left:left + size]


def test_image(h, w, gen):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([0.5 + 0.4 * torch.sin(6 * xx + 2 * yy), 0.5 + 0.4 * torch.cos(5 * yy), 0.3 + 0.5 * xx * yy])
    return (base + 0.08 * torch.randn(base.shape, generator=gen)).clamp(0, 1)


def digest(state_dict):
    out = {}
    for k, v in state_dict.items():
        v = v.double()
        out[k] = {"shape": list(v.shape), "sum": v.sum().item(), "sum_sq": (v * v).sum().item(),
                  "first": v.flatten()[:4].tolist()}
    return out


def unet_config_json(unet_config):
    """The crate's UNetConfig schema."""
    c = {k: list(v) if isinstance(v, tuple) else v for k, v in unet_config.items()}
    c.setdefault("downscale", False)
    return c


def wild_checkpoints(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    daclip = DaCLIP(WILD_CLIP_CONFIG).eval()
    torch.save(daclip.state_dict(), os.path.join(out_dir, "wild-daclip_ViT-L-14.pt"))
    del daclip
    torch.save(ConditionalUNet(**WILD_UNET_CONFIG).eval().state_dict(), os.path.join(out_dir, "wild-ir.pth"))
    for f in sorted(os.listdir(out_dir)):
        print(f"{f}: {os.path.getsize(os.path.join(out_dir, f)) / 1e9:.2f} GB")


def main(out_dir, full=False, wild_reduced=False, wild_full=False):
    clip_config = FULL_CLIP_CONFIG if full else WILD_CLIP_CONFIG if wild_full else WILD_REDUCED_CLIP_CONFIG if wild_reduced else CLIP_CONFIG
    unet_config = FULL_UNET_CONFIG if full else WILD_UNET_CONFIG if wild_reduced or wild_full else UNET_CONFIG
    seeded = wild_reduced or wild_full  # the crate's seeded weights and a float64 reference
    os.makedirs(out_dir, exist_ok=True)
    if seeded:
        # At these widths (sums over 4096 products, 24-layer-wide activations) two float32
        # implementations differ by about 1e-4 of the output's rms from rounding alone;
        # a float64 reference measures each one's own error (saved as float32).
        torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)

    daclip = DaCLIP(clip_config).eval()
    unet = ConditionalUNet(**unet_config).eval()
    with open(os.path.join(out_dir, "clip_config.json"), "w") as f:
        json.dump(clip_config, f, indent=2)
    if seeded:
        seeded_weights(daclip, WILD_SEEDS["daclip_seed"])
        seeded_weights(unet, WILD_SEEDS["unet_seed"])
        with open(os.path.join(out_dir, "random_weights.json"), "w") as f:
            json.dump({**WILD_SEEDS, "unet_config": unet_config_json(unet_config)}, f, indent=2)
    else:
        randomise(daclip, gen)
        randomise(unet, gen)
        torch.save(daclip.state_dict(), os.path.join(out_dir, "daclip.pt"))
        torch.save(unet.state_dict(), os.path.join(out_dir, "universal-ir.pth"))
        with open(os.path.join(out_dir, "checkpoint_digest.json"), "w") as f:
            json.dump({"daclip.pt": digest(daclip.state_dict()), "universal-ir.pth": digest(unet.state_dict())}, f)

    fx = {}
    with torch.no_grad():
        image = test_image(H, W, gen)
        fx["input_image"] = image
        u8 = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)  # truncation, as published
        fx["clip_u8"] = torch.from_numpy(u8.copy())
        size = clip_config["vision_cfg"]["image_size"]
        resized = clip_preprocess(u8, size)
        fx["clip_resized_u8"] = torch.from_numpy(resized.copy())
        mean, std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
        fx["clip_mean"], fx["clip_std"] = mean, std
        clip_input = ((torch.from_numpy(resized.copy()).float() / 255 - mean) / std).permute(2, 0, 1)[None]
        fx["clip_input"] = clip_input

        image_features, degra_features = daclip.encode_image(clip_input, control=True)
        fx["image_features"], fx["degra_features"] = image_features, degra_features
        fx["control_hiddens"] = torch.stack(daclip.control_hiddens(clip_input))[:, 0]
        fx["image_features_nocontrol"] = daclip.encode_image(clip_input, control=False)[0]

        if seeded:  # the ten names' ids, as the tiny set holds them (open_clip's)
            from safetensors.torch import load_file
            here = os.path.dirname(os.path.abspath(__file__))
            tokens = load_file(os.path.join(here, "../fixtures/tiny/fixtures.safetensors"))["text_tokens"]
        else:
            import open_clip
            tokens = open_clip.tokenize(DEGRADATIONS)
        fx["text_tokens"] = tokens.to(torch.int64)
        text_features = daclip.encode_text(tokens)
        fx["text_features"] = text_features
        d = degra_features / degra_features.norm(dim=-1, keepdim=True)
        t = text_features / text_features.norm(dim=-1, keepdim=True)
        fx["text_probs"] = (100.0 * d @ t.T).softmax(dim=-1)

        sde = IRSDE()
        cond = image[None]
        z0 = torch.randn(cond.shape, generator=gen)
        xt = cond + z0 * sde.max_sigma
        fx["unet_cond"], fx["unet_z0"], fx["unet_xt"] = cond, z0, xt
        if unet.use_degra_context:
            fx["unet_prompt_emb"] = unet.prompt_embedding(degra_features)
        for step in (1, 50, 100):
            fx[f"unet_temb_t{step}"] = unet.time_embedding(torch.tensor([float(step)]))
            fx[f"unet_out_t{step}"] = unet(xt, cond, step, degra_features, image_features)

        odd_cond = test_image(ODD_H, ODD_W, gen)[None]
        odd_xt = odd_cond + torch.randn(odd_cond.shape, generator=gen) * sde.max_sigma
        fx["odd_cond"], fx["odd_xt"] = odd_cond, odd_xt
        fx["odd_out_t50"] = unet(odd_xt, odd_cond, 50, degra_features, image_features)

        fx["sde_thetas"], fx["sde_sigmas"] = sde.thetas, sde.sigmas
        fx["sde_thetas_cumsum"], fx["sde_sigma_bars"] = sde.thetas_cumsum, sde.sigma_bars
        fx["sde_dt"] = sde.dt.reshape(1)
        fx["sde_max_sigma"] = torch.tensor([sde.max_sigma], dtype=torch.float32)

        # Three posterior steps from states on the forward marginals of a clean image.
        clean = test_image(H, W, gen)[None]
        for k, step in enumerate((100, 50, 1)):
            x = cond + (clean - cond) * torch.exp(-sde.thetas_cumsum[step] * sde.dt) \
                + sde.sigma_bars[step] * torch.randn(cond.shape, generator=gen)
            noise = unet(x, cond, step, degra_features, image_features)
            z = torch.randn(cond.shape, generator=gen)
            x0 = sde.x0_from_noise(x, cond, step, noise)
            mean, std = sde.posterior_mean_std(x, x0, cond, step)
            fx[f"post{k}_t"] = torch.tensor([float(step)])
            fx[f"post{k}_xt"], fx[f"post{k}_noise"], fx[f"post{k}_z"] = x, noise, z
            fx[f"post{k}_x0"], fx[f"post{k}_mean"] = x0, mean
            fx[f"post{k}_std"] = std.reshape(1)
            fx[f"post{k}_out"] = mean + std * z
            # The "sde" mode's step from the same state, noise and z.
            fx[f"sde{k}_out"] = sde.reverse_sde_step(x, cond, step, noise, z)

    fx = {k: (v.float() if v.dtype == torch.float64 else v).detach().clone().contiguous() for k, v in fx.items()}
    save_file(fx, os.path.join(out_dir, "fixtures.safetensors"),
              metadata={"clip_config": json.dumps(clip_config), "unet_config": json.dumps(unet_config_json(unet_config))})
    total = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    print(f"wrote {len(fx)} fixtures to {out_dir} ({total / 1e6:.1f} MB in the directory)")
    print("text_probs", fx["text_probs"].numpy().round(3))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if "--wild-checkpoints" in sys.argv:
        wild_checkpoints(args[0])
    else:
        main(args[0] if args else "tests/fixtures/tiny", full="--full" in sys.argv, wild_reduced="--wild-reduced" in sys.argv,
             wild_full="--wild-full" in sys.argv)
