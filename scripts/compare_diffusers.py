#!/usr/bin/env python3
"""Runs diffusers' UNet2DConditionModel (PyTorch eager, fp16) on what
`deno task bench --sd --compare-dir DIR` wrote, on the same GPU, and compares it with ours.

DIR holds `unet/` (config.json and the exact f16 weights our run used, as safetensors),
`x.npy` [B, 4, S, S], `t.npy` [B], `ctx.npy` [B, L, D] (float32; both sides cast them to fp16)
and `out.npy` (our float32 output for all B rows), plus `meta.json`.

Prints, and with --json writes:
- the max absolute and the relative L2 difference between diffusers' output and ours;
- diffusers' forward time per batch (CUDA events after warm-up, median of --reps) and, given the
  bench JSON (--bench-json), ours from its `unet_forward` rows and the ratio ours / diffusers.

`--check-args` validates the arguments and DIR's files with numpy alone and exits: that much runs
on a machine without torch's CUDA or diffusers. Everything past it needs both.
"""
import argparse
import json
import os
import sys

REQUIRED = ["x.npy", "t.npy", "ctx.npy", "out.npy", "meta.json", "unet/config.json"]
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Compare diffusers' fp16 UNet2DConditionModel with reflow's on the same GPU."
    )
    p.add_argument("--dir", required=True, help="the folder `bench --sd --compare-dir` wrote")
    p.add_argument("--bench-json", help="the `bench --sd --json` record (our forward times)")
    p.add_argument("--batches", default="1,2,4", help="comma list of batch sizes to time")
    p.add_argument("--reps", type=int, default=10, help="timed forwards per batch (median)")
    p.add_argument("--warmup", type=int, default=3, help="untimed forwards per batch first")
    p.add_argument("--device", default="cuda", help="torch device (default cuda)")
    p.add_argument("--json", help="write the results here")
    p.add_argument(
        "--check-args",
        action="store_true",
        help="check the arguments and DIR's files (numpy only), then exit",
    )
    a = p.parse_args(argv)
    try:
        a.batches = [int(b) for b in a.batches.split(",") if b]
    except ValueError:
        p.error(f"--batches must be a comma list of integers, got {a.batches!r}")
    if not a.batches or min(a.batches) < 1:
        p.error("--batches needs at least one positive batch size")
    if a.reps < 1 or a.warmup < 0:
        p.error("--reps must be >= 1 and --warmup >= 0")
    return a


def load_inputs(d):
    """The saved arrays; errors name the file at fault."""
    import numpy as np

    missing = [f for f in REQUIRED + [WEIGHTS] if not os.path.exists(os.path.join(d, f))]
    if missing:
        raise SystemExit(f"{d}: missing {', '.join(missing)} (run bench --sd --compare-dir {d})")
    arrays = {}
    for name in ["x", "t", "ctx", "out"]:
        path = os.path.join(d, f"{name}.npy")
        a = np.load(path)
        if a.dtype != np.float32:
            raise SystemExit(f"{path}: expected float32, got {a.dtype}")
        arrays[name] = a
    x, t, ctx, out = arrays["x"], arrays["t"], arrays["ctx"], arrays["out"]
    B = x.shape[0]
    if x.ndim != 4 or t.shape != (B,) or ctx.ndim != 3 or ctx.shape[0] != B or out.shape != x.shape:
        raise SystemExit(
            f"{d}: inconsistent shapes x {x.shape}, t {t.shape}, ctx {ctx.shape}, out {out.shape}"
        )
    with open(os.path.join(d, "unet", "config.json")) as f:
        config = json.load(f)
    if config.get("cross_attention_dim") != ctx.shape[2]:
        raise SystemExit(
            f"{d}/unet/config.json: cross_attention_dim {config.get('cross_attention_dim')} "
            f"does not match ctx.npy's last axis {ctx.shape[2]}"
        )
    return arrays, config


def our_times(bench_json):
    """Our f16 forward ms per batch from the bench record's sd15 `unet_forward` rows."""
    if not bench_json:
        return {}
    with open(bench_json) as f:
        rec = json.load(f)
    return {
        r["batch"]: r["ms"]
        for r in rec.get("rows", [])
        if r.get("name") == "unet_forward" and r.get("model") == "sd15" and "ms" in r
    }


def main(argv):
    a = parse_args(argv)
    arrays, config = load_inputs(a.dir)
    ours_ms = our_times(a.bench_json)
    B = arrays["x"].shape[0]
    too_big = [b for b in a.batches if b > B]
    if too_big:
        raise SystemExit(f"--batches {too_big} exceed the {B} saved rows of {a.dir}/x.npy")
    if a.check_args:
        print(f"arguments and {a.dir} ok: batch {B}, config {config.get('block_out_channels')}")
        return 0

    import numpy as np

    try:
        import torch
        from diffusers import UNet2DConditionModel
    except ImportError as e:
        raise SystemExit(
            f"torch or diffusers is not importable ({e}); this step runs on the GPU machine, where "
            "torch is installed and diffusers' wheel must be carried (the device README's note "
            "on Python packages)"
        )
    dev = torch.device(a.device)
    unet = UNet2DConditionModel.from_pretrained(
        os.path.join(a.dir, "unet"), torch_dtype=torch.float16
    ).to(dev)
    unet.eval()
    x = torch.from_numpy(arrays["x"]).to(dev, torch.float16)
    t = torch.from_numpy(arrays["t"]).to(dev)
    ctx = torch.from_numpy(arrays["ctx"]).to(dev, torch.float16)
    with torch.no_grad():
        ref = unet(x, t, encoder_hidden_states=ctx).sample.float().cpu().numpy()
    ours = arrays["out"]
    diff = np.abs(ref.astype(np.float64) - ours.astype(np.float64))
    rel = float(np.linalg.norm(diff) / max(np.linalg.norm(ref.astype(np.float64)), 1e-30))
    result = {
        "torch": torch.__version__,
        "diffusers": __import__("diffusers").__version__,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev),
        "batch_compared": B,
        "max_abs_diff": float(diff.max()),
        "rel_l2_diff": rel,
        "ref_abs_max": float(np.abs(ref).max()),
        "timing": [],
    }
    for b in a.batches:
        xb, tb, cb = x[:b].contiguous(), t[:b].contiguous(), ctx[:b].contiguous()
        with torch.no_grad():
            for _ in range(a.warmup):
                unet(xb, tb, encoder_hidden_states=cb)
            times = []
            for _ in range(a.reps):
                if dev.type == "cuda":
                    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    s.record()
                    unet(xb, tb, encoder_hidden_states=cb)
                    e.record()
                    torch.cuda.synchronize()
                    times.append(s.elapsed_time(e))
                else:
                    import time

                    t0 = time.perf_counter()
                    unet(xb, tb, encoder_hidden_states=cb)
                    times.append((time.perf_counter() - t0) * 1000)
        ms = float(np.median(times))
        row = {"batch": b, "diffusers_ms": ms, "ours_ms": ours_ms.get(b)}
        if row["ours_ms"] is not None:
            row["ratio_ours_over_diffusers"] = row["ours_ms"] / ms
        result["timing"].append(row)
    print(json.dumps(result, indent=2))
    for r in result["timing"]:
        ratio = r.get("ratio_ours_over_diffusers")
        print(
            f"batch {r['batch']}: diffusers {r['diffusers_ms']:.2f} ms, ours "
            + (f"{r['ours_ms']:.2f} ms, ratio {ratio:.2f}x" if ratio else "not measured")
        )
    print(f"max |ours - diffusers| = {result['max_abs_diff']:.4g}, relative L2 {rel:.3g}")
    if a.json:
        tmp = a.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
        os.replace(tmp, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
