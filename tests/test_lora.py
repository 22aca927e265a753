"""LoRA fine-tuning (fffvdi/train/lora.py): which weights train, small checkpoints, exact resume, merge, overfitting, 8-bit
AdamW, config errors. Tiny model on CPU."""
import re
import shutil
import sys

import pytest
import torch

from fffvdi.errors import ConfigError, FFFVDIError, InputError

from conftest import load_script, reset_accelerate_state as _reset, train_inputs, train_tiny as _run

merge_script = load_script("merge_lora")
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_svd_dir):
    """Synthetic clips, a saved initial FFF-VDI UNet with a non-identity propagation module, common overrides."""
    base = tmp_path_factory.mktemp("lora")
    overrides = [*train_inputs(base, tiny_svd_dir, num_videos=2, num_frames=8, init_unet=True), "data.num_frames=6",
                 "optim.lr=1e-3", "optim.weight_decay=0.0", "lora.enabled=true", "lora.rank=4", "lora.alpha=4"]
    return base, overrides


@pytest.fixture(scope="module")
def run_l(setup):
    """3 LoRA steps, checkpoint at 2, adapters kept unmerged at the end (OUTPUT/lora)."""
    base, overrides = setup
    torch.set_num_threads(1)
    result = _run(overrides, f"checkpoint.output_dir={base / 'l'}", "train.max_steps=3", "checkpoint.every_steps=2",
                  "lora.merge_on_save=false")
    _reset()
    return result


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_lora_trains_only_adapters_and_the_propagation_module(setup, run_l):
    from fffvdi.train.lora import check_targets
    from fffvdi.models.unet import FFFVDIUNet

    base, _ = setup
    assert run_l.global_step == 3 and all(v > 0 for v in run_l.losses.values())
    unet = run_l.unet
    trainable = {n for n, p in unet.named_parameters() if p.requires_grad}
    # Expected count: r * (in + out) per targeted Linear layer, plus the whole propagation module.
    init = FFFVDIUNet.from_pretrained(base / "init_unet")
    targets = check_targets(init.unet, [r".*temporal_transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)",
                                        r".*temporal_transformer_blocks\.\d+\.(ff|ff_in)\.net\.(0\.proj|2)"])
    in_temporal = [n for n, m in init.unet.named_modules()
                   if "temporal_transformer_blocks" in n and isinstance(m, torch.nn.Linear)]
    assert targets == in_temporal and len(targets) == 48  # 4 temporal blocks x (8 attention + 4 feed-forward) Linears
    linears = dict(init.unet.named_modules())
    expected = sum(4 * (linears[n].in_features + linears[n].out_features) for n in targets)
    expected += sum(p.numel() for p in init.propagation.parameters())
    assert sum(p.numel() for n, p in unet.named_parameters() if n in trainable) == expected
    assert all("lora_" in n or n.startswith("propagation.") for n in trainable)
    # Every base weight is bit-identical to the initial UNet; adapters and the module moved.
    before, after = _state(init), _state(unet)
    plain = {re.sub(r"\.base_layer", "", k): v for k, v in after.items() if "lora_" not in k}
    assert plain.keys() == before.keys()
    moved = [k for k in before if not torch.equal(before[k], plain[k])]
    assert moved and all(k.startswith("propagation.") for k in moved), moved[:5]
    lora_b = [k for k in after if "lora_B" in k]
    assert len(lora_b) == 48 and all(after[k].abs().sum() > 0 for k in lora_b)  # B starts at zero


def test_checkpoint_holds_adapters_and_module_only(setup, run_l):
    out = setup[0] / "l"
    ckpt = out / "checkpoint-2"
    assert (ckpt / "lora" / "adapter_model.safetensors").is_file() and not (ckpt / "unet").exists()
    assert (out / "lora" / "base.json").is_file() and not (out / "unet").exists()  # merge_on_save=false


def test_resume_reproduces_the_uninterrupted_lora_run(setup, run_l):
    base, overrides = setup
    out = base / "resumed"
    shutil.copytree(base / "l" / "checkpoint-2", out / "checkpoint-2")
    result = _run(overrides, f"checkpoint.output_dir={out}", "train.max_steps=3", "checkpoint.every_steps=2",
                  "lora.merge_on_save=false", "checkpoint.resume_from_checkpoint=latest")
    assert result.first_step == 2 and sorted(result.losses) == [3]
    assert result.losses[3] == run_l.losses[3]  # exactly: same adapters, optimizer state and noise
    a, b = run_l.unet.state_dict(), result.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    _reset()
    with pytest.raises(InputError, match="do not fit this run's lora section"):
        _run(overrides, f"checkpoint.output_dir={out}", "train.max_steps=4", "lora.rank=8",
             "checkpoint.resume_from_checkpoint=latest")
    _reset()
    with pytest.raises(InputError, match="holds LoRA adapters; resume it with lora.enabled=true"):
        _run(overrides, f"checkpoint.output_dir={out}", "train.max_steps=4", "lora.enabled=false",
             "checkpoint.resume_from_checkpoint=latest")


def _forward(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, f, h, w = 1, 4, 8, 8
    sample = torch.randn(b, f, 8, h, w, generator=g)
    args = dict(encoder_hidden_states=torch.randn(b, 1, 32, generator=g), added_time_ids=torch.tensor([[6.0, 127.0, 0.02]]),
                masks=(torch.rand(b, f, 1, h, w, generator=g) > 0.5).float(),
                flows_fw=torch.randn(b, f - 1, 2, h, w, generator=g), flows_bw=torch.randn(b, f - 1, 2, h, w, generator=g))
    with torch.no_grad():
        return unet.eval()(sample, torch.tensor([0.5]), **args)


def test_merged_equals_unmerged_and_loads_without_peft(setup, run_l, tiny_svd_dir, tmp_path, monkeypatch, capsys):
    from fffvdi.train.lora import has_lora, load_lora_folder
    from fffvdi.models.loading import load_svd_components
    from fffvdi.models.unet import FFFVDIUNet

    base, _ = setup
    unmerged = load_lora_folder(base / "l" / "lora")
    assert has_lora(unmerged)
    merged_dir = merge_script.main(["--checkpoint", str(base / "l"), "--output", str(tmp_path / "merged")])
    out_unmerged = _forward(unmerged)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "peft", None)  # inference must not need peft
        merged = load_svd_components(str(tiny_svd_dir), checkpoint=str(merged_dir)).unet
    assert not any("lora" in k or "base_layer" in k for k in merged.state_dict())
    out_merged = _forward(merged)
    assert torch.allclose(out_merged, out_unmerged, atol=1e-5, rtol=1e-4)
    out_base = _forward(FFFVDIUNet.from_pretrained(base / "init_unet"))
    assert (out_base - out_unmerged).abs().max() > 1e-3  # the adapters change the output: the check is not vacuous
    # The CLI refuses to overwrite and names a folder without adapters.
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        merge_script.main(["--checkpoint", str(base / "l"), "--output", str(merged_dir)])
    with pytest.raises(InputError, match="no LoRA adapters"):
        merge_script.main(["--checkpoint", str(tmp_path), "--output", str(tmp_path / "x")])


@pytest.fixture(scope="module")
def overfit(setup):
    """30 steps on one fixed clip (1 video, same draw every epoch, fixed sigma, no CFG dropout): LoRA and full."""
    from fffvdi.data.synthetic import make_synthetic_dataset

    base, overrides = setup
    make_synthetic_dataset(base / "one", num_videos=1, num_frames=6, size=(64, 64), seed=3, num_short=0)
    common = [*overrides, f"data.root={base / 'one'}", "data.epoch_cycle=1", "train.p_std=0.0",
              "train.drop_image_embeds=0", "train.drop_cond_latents=0", "train.drop_both=0", "train.max_steps=30",
              "checkpoint.every_steps=30", "train.cond_aug_space=latent", "lora.rank=8", "lora.alpha=8",
              "optim.lr=3e-3", "data.hflip=0"]
    runs = {}
    for mode in ("lora", "full"):
        runs[mode] = _run(common, f"checkpoint.output_dir={base / ('fit-' + mode)}", f"data.cache_dir={base / 'cache'}",
                          f"lora.enabled={mode == 'lora'}")
        _reset()
    return base, runs


def _mean(losses, steps):
    return sum(losses[s] for s in steps) / len(steps)


def test_lora_overfits_one_clip_like_full_fine_tuning(overfit):
    base, runs = overfit
    drops = {}
    for mode, run in runs.items():
        first, last = _mean(run.losses, range(1, 6)), _mean(run.losses, range(26, 31))
        drops[mode] = last / first
        print(f"{mode}: mean loss steps 1-5 {first:.4f} -> steps 26-30 {last:.4f} ({100 * (1 - last / first):.0f} % lower)")
    assert drops["lora"] < 0.8 and drops["full"] < 0.8, drops
    # Checkpoints: LoRA keeps adapters + module (+ their optimizer state), full keeps the whole UNet.
    size = lambda d: sum(p.stat().st_size for p in d.rglob("*") if p.is_file())  # noqa: E731
    lora, full = size(base / "fit-lora" / "checkpoint-30"), size(base / "fit-full" / "checkpoint-30")
    print(f"checkpoint sizes: lora {lora / 1e6:.2f} MB, full {full / 1e6:.2f} MB")
    assert lora < 0.5 * full


def test_svd_xt_trainable_counts():
    from fffvdi.train.lora import count_trainable

    full, r16 = count_trainable("full"), count_trainable("lora", rank=16)
    assert full["total"] == 1_528_730_378 and full["propagation"] == 4_107_296  # SVD-XT UNet 1.52 B + module
    assert full["trainable"] == 500_913_414
    assert r16["trainable"] == 13_018_144 and r16["trainable"] - r16["propagation"] == 8_910_848


def test_8bit_adamw_on_a_gpu():
    from omegaconf import OmegaConf

    from fffvdi.train.setup import build_optimizer

    if not torch.cuda.is_available():
        pytest.skip("bitsandbytes' 8-bit AdamW needs a CUDA GPU (run in the GPU check)")
    pytest.importorskip("bitsandbytes", reason="optional dependency: pip install bitsandbytes")
    p = torch.nn.Parameter(torch.ones(4096, device="cuda"))
    opt = build_optimizer([p], OmegaConf.create(dict(name="adamw8bit", lr=1e-2, betas=[0.9, 0.999], weight_decay=0.0,
                                                     eps=1e-8)))
    assert type(opt).__name__ == "AdamW8bit"
    (p ** 2).sum().backward()
    opt.step()
    assert (p < 1).all()


def test_8bit_adamw_on_cpu_is_a_config_error():
    from omegaconf import OmegaConf

    from fffvdi.train.setup import build_optimizer

    o = OmegaConf.create(dict(name="adamw8bit", lr=1e-5, betas=[0.9, 0.999], weight_decay=0.0, eps=1e-8))
    with pytest.raises(ConfigError, match="pip install bitsandbytes|CUDA GPU"):
        build_optimizer([torch.nn.Parameter(torch.zeros(2))], o)


def test_lora_and_lean_config_errors(setup, tmp_path):
    base, overrides = setup
    out = tmp_path / "never"
    cases = [("lora.rank=0", "lora.rank"), ("lora.dropout=1.5", "lora.dropout"),
             ("optim.use_8bit_adam=true", "optim.name=adamw8bit"), ("optim.name=adam", "optim.name"),
             ("train.frames_per_step=9", "frames_per_step"), (f"data.cache_dir={tmp_path}", "epoch_cycle"),
             ("train.cond_aug_space=noise", "cond_aug_space"), ("lora.target_modules=['a(b']", "not a regex")]
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        cases.append(("optim.name=adamw8bit", "pip install bitsandbytes"))
    for override, message in cases:
        with pytest.raises(ConfigError, match=message):
            _run(overrides, f"checkpoint.output_dir={out}", override)
        assert not out.exists(), override
    with pytest.raises(ConfigError, match="cond_aug_space.*must be latent"):
        _run(overrides, f"checkpoint.output_dir={out}", f"data.cache_dir={tmp_path}", "data.epoch_cycle=2")
    with pytest.raises(FFFVDIError, match=r"lora.target_modules pattern '\.\*to_nothing' matches no Linear"):
        _run(overrides, f"checkpoint.output_dir={out}", "lora.target_modules=[.*to_nothing]")
    assert not out.exists()  # checked on the meta-device UNet from config.json, before the run folder


def test_apply_lora_trains_adapters_and_full_train_only(tiny_svd_dir):
    from omegaconf import OmegaConf

    from fffvdi.train.lora import apply_lora
    from fffvdi.models.unet import FFFVDIUNet
    from fffvdi.train.config import LoraConfig

    cfg = OmegaConf.merge(OmegaConf.structured(LoraConfig), {"rank": 2, "alpha": 2})
    unet = FFFVDIUNet.from_pretrained(tiny_svd_dir, subfolder="unet")
    params = apply_lora(unet, cfg)
    names = {n for n, p in unet.named_parameters() if p.requires_grad}
    assert {id(p) for p in params} == {id(p) for p in unet.parameters() if p.requires_grad}
    assert names and all("lora_" in n or n.startswith("propagation.") for n in names)
    assert any(n.startswith("propagation.") for n in names) and any("lora_A" in n for n in names)
    with pytest.raises(ConfigError, match="lora.full_train pattern 'no_such_part'") as err:
        apply_lora(FFFVDIUNet.from_pretrained(tiny_svd_dir, subfolder="unet"),
                   OmegaConf.merge(cfg, {"full_train": ["no_such_part"]}))
    assert err.value.key == "lora.full_train"
