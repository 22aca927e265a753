"""Developer tool: which of the FFF-VDI release's ArchRules (propagation.ARCH_RULES) help the `light` DNA module?

Trains `DeformableNoiseAlignment(arch="light")` alone on a proxy of its job (carry content into holes along flows)
per variant - light as is, light with one release rule switched, light with all of them - and reports the held-out
hole MSE over seeds. All variants of a seed start from the same weights and see the same batches (paired diffs).

Proxy: synthetic clips of multi-scale random texture (4 "latent" channels) translating by a constant
integer or sub-pixel velocity of up to --max-motion px/frame (new content enters from the borders), half
with a textured foreground rectangle moving its own way (occlusions, so the fb check matters); holes are
1-2 moving boxes, one glued to a frame border in half the clips. features = a fixed random 3x3 conv
embedding (C channels) of the frames with the holes zeroed, plus noise; target = the embedding of the full
frames; flows = the true (layered) flows. Loss: MSE inside the holes (+ --outside-weight x MSE outside,
so the module cannot buy hole accuracy by wrecking the visible features).

torchvision's CPU deform_conv2d backward is ~5x slower than the same modulated deformable conv written with
grid_sample (equal to float64 round-off, checked at start): used unless --tv-deform. hidden=16, groups=2 keep
production's 8 channels per deform group at CPU cost. Run: python scripts/dev/compare_dna_rules.py [--steps N]
(~15-20 min on one shared core; --steps 600: ~1 h)
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import DeformConv2d, deform_conv2d

from fffvdi.models.propagation import ARCH_RULES, DeformableNoiseAlignment

# The baseline is light's rules before it adopted the residual refinement this script measured (residual=False).
BASE = dict(residual=False)
VARIANTS = {  # name -> rule changes on top of BASE ("slope" and "zero_deform_bias" are applied to the weights)
    "light": dict(BASE),
    "residual": dict(residual=True),
    "start_from_current": dict(BASE, start_from_current=True),
    "slope_0.2": dict(BASE, slope=0.2),
    "padding_zeros": dict(BASE, padding="zeros"),
    "no_fb_in_bounds": dict(BASE, fb_in_bounds=False),
    "zero_deform_bias": dict(BASE, zero_deform_bias=True),
    "all_release": {k: getattr(ARCH_RULES["official"], k) for k in
                    ("residual", "start_from_current", "slope", "padding", "fb_in_bounds", "zero_deform_bias")},
}


def grid_deform_conv(x, offset, mask, weight, bias):
    """Modulated deformable 3x3 conv (stride 1, padding 1) as torchvision computes it, via one grid_sample."""
    n, c, hh, ww = x.shape
    cout, _, kh, kw = weight.shape
    k = kh * kw
    g = offset.shape[1] // (2 * k)
    off = offset.view(n, g, k, 2, hh, ww)  # (group, tap, (dy, dx))
    taps = torch.arange(k, device=x.device)
    ky = (taps // kw - kh // 2).to(x.dtype).view(1, 1, k, 1, 1)
    kx = (taps % kw - kw // 2).to(x.dtype).view(1, 1, k, 1, 1)
    py = torch.arange(hh, dtype=x.dtype).view(1, 1, 1, hh, 1) + ky + off[:, :, :, 0]
    px = torch.arange(ww, dtype=x.dtype).view(1, 1, 1, 1, ww) + kx + off[:, :, :, 1]
    grid = torch.stack([2 * px / max(ww - 1, 1) - 1, 2 * py / max(hh - 1, 1) - 1], -1).reshape(n * g, k * hh, ww, 2)
    s = F.grid_sample(x.reshape(n * g, c // g, hh, ww), grid, padding_mode="zeros", align_corners=True)
    s = (s.view(n, g, c // g, k, hh, ww) * mask.view(n, g, 1, k, hh, ww)).reshape(n, c * k, hh * ww)
    out = torch.matmul(weight.reshape(cout, c * k), s).view(n, cout, hh, ww)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def _fast_deform_forward(self, x, offset, mask=None):
    assert mask is not None and self.stride == (1, 1) and self.padding == (1, 1) and self.dilation == (1, 1)
    return grid_deform_conv(x, offset, mask, self.weight, self.bias)


def check_grid_deform_conv() -> float:
    """Largest relative difference (values and all gradients, float64) to torchvision's deform_conv2d."""
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(2, 16, 9, 11, generator=g), 3 * torch.randn(2, 2 * 4 * 9, 9, 11, generator=g),
            torch.rand(2, 4 * 9, 9, 11, generator=g), torch.randn(8, 16, 3, 3, generator=g), torch.randn(8, generator=g)]
    args = [a.double().requires_grad_() for a in args]
    r = torch.randn(2, 8, 9, 11, generator=g).double()
    x, off, mk, wt, b = args
    a, o = deform_conv2d(x, off, wt, b, padding=1, mask=mk), grid_deform_conv(x, off, mk, wt, b)
    ga, go = torch.autograd.grad((a * r).sum(), args), torch.autograd.grad((o * r).sum(), args)
    return max([((a - o).abs().max() / a.abs().max()).item()] +
               [((p - q).abs().max() / q.abs().max()).item() for p, q in zip(go, ga)])


def texture(g, ch, h, w):
    """Multi-scale smooth random texture [ch, h, w], unit std per channel."""
    t = torch.zeros(1, ch, h, w)
    for s, a in ((2, 0.5), (4, 1.0), (8, 1.0)):
        t += a * F.interpolate(torch.randn(1, ch, h // s + 2, w // s + 2, generator=g), size=(h, w), mode="bicubic",
                               align_corners=True)
    return (t / t.std(dim=(2, 3), keepdim=True))[0]


def sample(img, x, y):
    """Bilinear sample `img [C, H, W]` at pixel coords x, y [h, w] (zeros outside)."""
    hh, ww = img.shape[-2:]
    grid = torch.stack([2 * x / (ww - 1) - 1, 2 * y / (hh - 1) - 1], -1)[None]
    return F.grid_sample(img[None], grid, align_corners=True, padding_mode="zeros")[0]


def rand_vel(g, vmax):
    v = (torch.rand(2, generator=g) * 2 - 1) * vmax
    return v.round() if torch.rand(1, generator=g) < 0.5 else v  # half integer, half sub-pixel motion


def make_clip(g, f, h, w, vmax):
    """frames [F, 4, h, w], masks [F, 1, h, w], flows_fw / flows_bw [F-1, 2, h, w] (true layered flows)."""
    m = math.ceil(vmax * (f - 1)) + 4
    bg = texture(g, 4, h + 2 * m, w + 2 * m)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    v = rand_vel(g, vmax)
    frames = [sample(bg, xs + m - t * v[0], ys + m - t * v[1]) for t in range(f)]  # content moves by +v per frame
    fg_in, u = [torch.zeros(h, w, dtype=torch.bool) for _ in range(f)], v  # foreground coverage, velocity
    if torch.rand(1, generator=g) < 0.5:  # textured foreground rectangle, may enter / leave across the borders
        fh, fw = (int(a) for a in torch.randint(8, 17, (2,), generator=g))
        fg, u = texture(g, 4, fh + 1, fw + 1), rand_vel(g, vmax)
        mid = torch.rand(2, generator=g) * torch.tensor([w, h]) - torch.tensor([fw, fh]) / 2  # top-left at mid-clip
        for t in range(f):
            r = mid + (t - (f - 1) / 2) * u
            fg_in[t] = (xs >= r[0]) & (xs < r[0] + fw) & (ys >= r[1]) & (ys < r[1] + fh)
            frames[t] = torch.where(fg_in[t], sample(fg, xs - r[0], ys - r[1]), frames[t])
    fw_fl = torch.stack([torch.where(fg_in[t], u[:, None, None], v[:, None, None]) for t in range(f - 1)])
    bw_fl = torch.stack([-torch.where(fg_in[t + 1], u[:, None, None], v[:, None, None]) for t in range(f - 1)])
    masks = torch.zeros(f, 1, h, w)
    for i in range(int(torch.randint(1, 3, (1,), generator=g))):
        bh = int(torch.randint(h // 4, h // 2 + 1, (1,), generator=g))
        bw = int(torch.randint(w // 5, w // 3 + 1, (1,), generator=g))
        p0 = torch.rand(2, generator=g) * torch.tensor([w - bw, h - bh])
        mv = (torch.rand(2, generator=g) * 2 - 1) * 3
        if i == 0 and torch.rand(1, generator=g) < 0.5:  # glued to a border, sliding along it
            side = int(torch.randint(0, 4, (1,), generator=g))  # left, right, top, bottom
            ax = side // 2
            p0[ax], mv[ax] = (0.0 if side % 2 == 0 else float((w - bw, h - bh)[ax])), 0.0
        for t in range(f):
            p = (p0 + (t - (f - 1) / 2) * mv).round()
            masks[t, 0] += ((xs >= p[0]) & (xs < p[0] + bw) & (ys >= p[1]) & (ys < p[1] + bh)).float()
    return torch.stack(frames), masks.clamp(max=1), fw_fl, bw_fl


def make_batch(g, n, args, embed):
    """Module inputs and target for n clips; feature noise and flow noise drawn from g too."""
    clips = [make_clip(g, args.frames, args.height, args.width, args.max_motion) for _ in range(n)]
    frames, masks, fw, bw = (torch.stack(z) for z in zip(*clips))
    with torch.no_grad():
        target = embed(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
        feats = embed((frames * (1 - masks)).flatten(0, 1)).unflatten(0, frames.shape[:2])
    feats = feats + args.feat_noise * torch.randn(feats.shape, generator=g)
    fw, bw = (fl + args.flow_noise * torch.randn(fl.shape, generator=g) for fl in (fw, bw))
    return (feats, masks, fw, bw), target


def region_sums(out, target, masks, band=4):
    """Squared-error sums and counts (per channel) in: the holes, the holes within `band` px of the frame border
    (where padding and the bounds test act), and outside the holes -> tensor [6]."""
    se, c = (out - target).pow(2).sum(2, keepdim=True), out.shape[2]
    edge = torch.ones_like(masks)
    edge[..., band:-band, band:-band] = 0
    return torch.stack([x for r in (masks, masks * edge, 1 - masks) for x in ((se * r).sum(), r.sum() * c)])


def build(variant, seed, args):
    torch.manual_seed(seed)  # the same initial weights for every variant of a seed
    mod = DeformableNoiseAlignment(args.channels, args.hidden, args.groups, arch="light", identity_init=True)
    changes = VARIANTS[variant]
    mod.rules = dataclasses.replace(mod.rules, **changes)
    if "slope" in changes:  # the slope is baked into the LeakyReLUs of the backbone and fusion convs
        for layer in [*mod.backbone.modules(), *mod.fusion.modules()]:
            if isinstance(layer, nn.LeakyReLU):
                layer.negative_slope = changes["slope"]
    if changes.get("zero_deform_bias"):  # only read at construction: zero the deform biases now
        for align in mod.align.values():
            nn.init.zeros_(align.deform.bias)
    return mod


def evaluate(mod, eval_set):
    with torch.no_grad():
        tot = sum(region_sums(mod(*inputs), target, inputs[1]) for inputs, target in eval_set)
    return (tot[0::2] / tot[1::2]).tolist()  # hole, border hole, outside MSE


def train(variant, seed, args, embed, eval_set):
    t0, mod = time.time(), build(variant, seed, args)
    opt = torch.optim.Adam(mod.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(1000 + seed)  # the same batches for every variant of a seed
    for _ in range(args.steps):
        inputs, target = make_batch(g, args.batch, args, embed)
        r = region_sums(mod(*inputs), target, inputs[1])
        loss = r[0] / r[1].clamp(min=1) + args.outside_weight * r[4] / r[5].clamp(min=1)
        opt.zero_grad(set_to_none=True), loss.backward(), opt.step()
    return evaluate(mod, eval_set) + [time.time() - t0]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    for name, default in (("batch", 2), ("frames", 6), ("height", 32), ("width", 48), ("channels", 32), ("hidden", 16),
                          ("groups", 2), ("eval-clips", 32), ("threads", 1)):
        p.add_argument(f"--{name}", type=int, default=default)
    for name, default in (("lr", 1e-3), ("max-motion", 4.0), ("feat-noise", 0.1), ("flow-noise", 0.0)):
        p.add_argument(f"--{name}", type=float, default=default)  # max-motion: px per frame, per axis
    p.add_argument("--outside-weight", type=float, default=1.0, help="loss weight of the MSE outside the holes")
    p.add_argument("--tv-deform", action="store_true", help="keep torchvision's (slow on CPU) deform_conv2d kernel")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    if not args.tv_deform:
        err = check_grid_deform_conv()
        assert err < 1e-9, f"grid_sample deform conv differs from torchvision's by {err:.2e}"
        DeformConv2d.forward = _fast_deform_forward
        print(f"deform conv: grid_sample formulation (max rel. diff to torchvision, float64: {err:.1e})")
    torch.manual_seed(12345)
    embed = nn.Conv2d(4, args.channels, 3, padding=1, bias=False).requires_grad_(False)  # fixed random embedding
    nn.init.normal_(embed.weight, std=1.0 / math.sqrt(4 * 9))
    g_eval = torch.Generator().manual_seed(777)
    eval_set = [make_batch(g_eval, 8, args, embed) for _ in range(max(1, args.eval_clips // 8))]
    ident = sum(region_sums(i[0], t, i[1]) for i, t in eval_set)
    print(f"held-out {len(eval_set) * 8} clips: holes {ident[1] / (ident[1] + ident[5]):.3f} of the pixels, "
          f"{ident[3] / ident[1]:.2f} of them within 4 px of the border; identity (untrained) MSE: hole "
          f"{ident[0] / ident[1]:.4f}, border hole {ident[2] / ident[3]:.4f}, outside {ident[4] / ident[5]:.4f}")
    res = {}
    for v in args.variants:
        res[v] = [train(v, s, args, embed, eval_set) for s in range(args.seeds)]
        print(f"  {v:<19s}" + "".join(f" {n} " + " ".join(f"{r[k]:.4f}" for r in res[v]) for k, n in
                                      enumerate(("hole", "border", "outside"))) + f" ({sum(r[3] for r in res[v]):.0f} s)", flush=True)

    def ms(xs, sign=""):
        t = torch.tensor(xs, dtype=torch.float64)
        return f"{t.mean().item():{sign}.4f} ± {t.std().item() if len(xs) > 1 else 0.0:.4f}"

    base = res.get("light")
    print(f"\nsteps={args.steps} seeds={args.seeds} batch={args.batch} frames={args.frames} size={args.height}x{args.width} "
          f"C={args.channels} hidden={args.hidden} groups={args.groups} lr={args.lr} max_motion={args.max_motion}")
    print(f"{'variant':<19s} {'hole MSE':>15s} {'rel.':>5s} {'paired diff':>16s} {'border-hole MSE':>15s} {'paired diff':>16s} "
          f"{'outside MSE':>15s} {'s/run':>5s}")
    for v, rs in res.items():
        cols = []
        for k in (0, 1):
            cols += [ms([r[k] for r in rs])] + ([f"{sum(r[0] for r in rs) / sum(r[0] for r in base):5.3f}" if base
                                                else "    -"] if k == 0 else [])
            cols.append(ms([r[k] - b[k] for r, b in zip(rs, base)], "+") if base else "-")
        cols.append(ms([r[2] for r in rs]))
        print(f"{v:<19s} " + " ".join(cols) + f" {sum(r[3] for r in rs) / len(rs):5.1f}")


if __name__ == "__main__":
    main()
