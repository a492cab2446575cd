"""Times ONNX Runtime's CPU provider beside `daclip-webgpu bench --device cpu` on the same
models at the published shapes, and prints both with the ratios. Not part of CI: a
bench, to run on a quiet machine (machines of one kind differ up to 2x, so only the
ratios of one run mean anything).

    python3 -m venv /tmp/peers
    /tmp/peers/bin/pip install torch numpy onnx onnxruntime onnxscript
    cargo build --release
    /tmp/peers/bin/python tests/reference/onnx_peers.py [--threads 2] [--sides 64,128,256] [--onnx DIR]

Our reference models (daclip_reference.py) are exported at static shapes with opset 17:
DA-CLIP's image towers with the controller (encode_image, 1 x 3 x 224 x 224) and one
UNet step at each side (the published universal-IR UNet; text and image contexts of
512). The weights are seeded random values: speed does not depend on them. Each model is
timed with `intra_op_num_threads` threads, the fastest of five runs after two warm-ups,
as `bench` takes the fastest of its rounds. Our step excludes the time and prompt MLPs
(computed once per step for the whole image, about 0.1% of a 64x64 step); ONNX
Runtime's includes them. `--onnx DIR` keeps the exported files there (and reuses them).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, os.path.dirname(__file__))
from daclip_reference import ConditionalUNet, DaCLIP  # noqa: E402
from make_fixtures import FULL_CLIP_CONFIG, FULL_UNET_CONFIG, randomise  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


class ImageTowers(torch.nn.Module):
    def __init__(self, daclip):
        super().__init__()
        self.daclip = daclip

    def forward(self, image):
        return self.daclip.encode_image(image, control=True)


class UNetStep(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, xt, cond, time, text_context, image_context):
        return self.unet(xt, cond, time, text_context, image_context)


def export(model, inputs, names, path):
    if not os.path.exists(path):
        with torch.no_grad():
            torch.onnx.export(model, inputs, path, input_names=names, opset_version=17, dynamo=False)
    return path


def ort_ms(path, feeds, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    for _ in range(2):
        session.run(None, feeds)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def ours_ms(sides, threads):
    """Our rows from `bench --device cpu`: encode_image and a UNet step per side."""
    binary = os.path.join(ROOT, "target", "release", "daclip-webgpu")
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    found = {}
    full = subprocess.run([binary, "bench", "--device", "cpu"], env=env, capture_output=True, text=True, check=True).stdout
    steps = subprocess.run([binary, "bench", "--device", "cpu", "--steps", ",".join(map(str, sides))], env=env,
                           capture_output=True, text=True, check=True).stdout
    for line in (full + steps).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3:
            continue
        if cells[0].startswith("DA-CLIP encode_image with controller"):
            found["encode_image 224"] = float(cells[2])
        m = re.fullmatch(r"UNet step at (\d+)x\1", cells[0])
        if m:
            found[f"UNet step {m.group(1)}x{m.group(1)}"] = float(cells[1])
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sides", default="64,128,256")
    parser.add_argument("--onnx", help="folder for the exported models (default: a temporary one)")
    args = parser.parse_args()
    sides = [int(s) for s in args.sides.split(",")]
    folder = args.onnx or tempfile.mkdtemp(prefix="daclip-onnx-")
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    # nn.MultiheadAttention's fused inference path has no ONNX export.
    torch.backends.mha.set_fastpath_enabled(False)

    daclip = DaCLIP(FULL_CLIP_CONFIG).eval()
    randomise(daclip, gen)
    image = torch.randn(1, 3, 224, 224, generator=gen)
    paths = {"encode_image 224": (export(ImageTowers(daclip), (image,), ["image"], os.path.join(folder, "encode_image.onnx")),
                                  {"image": image.numpy()})}
    unet = ConditionalUNet(**FULL_UNET_CONFIG).eval()
    randomise(unet, gen)
    context = torch.randn(1, 512, generator=gen)
    for side in sides:
        x = torch.rand(1, 3, side, side, generator=gen)
        inputs = (x, x, torch.tensor([50.0]), context, context)
        names = ["xt", "cond", "time", "text_context", "image_context"]
        path = export(UNetStep(unet), inputs, names, os.path.join(folder, f"unet_{side}.onnx"))
        paths[f"UNet step {side}x{side}"] = (path, {n: t.numpy() for n, t in zip(names, inputs)})

    theirs = {name: ort_ms(path, feeds, args.threads) for name, (path, feeds) in paths.items()}
    ours = ours_ms(sides, args.threads)
    print(f"CPU, {args.threads} threads: daclip-webgpu (bench --device cpu) and ONNX Runtime {ort.__version__} "
          f"(CPU provider), milliseconds, the fastest run of each")
    print()
    print(f"| {'model':<20} | {'ours':>8} | {'ONNX Runtime':>12} | {'ours / ORT':>10} |")
    print(f"|{'-' * 22}|{'-' * 10}|{'-' * 14}|{'-' * 12}|")
    for name in theirs:
        mine = ours.get(name)
        ratio = f"{mine / theirs[name]:.2f}" if mine else "n/a"
        print(f"| {name:<20} | {mine if mine else float('nan'):>8.1f} | {theirs[name]:>12.1f} | {ratio:>10} |")
    print(f"\nONNX files in {folder}")


if __name__ == "__main__":
    main()
