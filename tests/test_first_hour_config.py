"""Issue #22 (items 1 and 3): str-typed config keys take the text as typed (YAML 1.1 reads `no` as false), training
errors end the output, and inference reports every missing checkpoint, model and output problem together, up front."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import load_script
from synthetic_video import translating_frames

from fffvdi.config import load_config
from fffvdi.errors import ConfigError, InputError
from fffvdi.inpaint.config import InferenceConfig
from fffvdi.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CLI = load_script("inference")


# ---------------------------------------------------------------- item 1: `no` stays "no"


@pytest.mark.parametrize("text", ["no", "No", "off", "on", "yes", "false", "TRUE"])
def test_str_keys_take_the_text_typed_on_the_command_line(text):
    cfg = load_config(TrainConfig, None, [f"train.mixed_precision={text}", f"train.weight_dtype={text}",
                                          f"lora.target_modules=[{text}, x]"])
    assert cfg.train.mixed_precision == text and cfg.train.weight_dtype == text  # not 'False' / 'True'
    assert list(cfg.lora.target_modules) == [text, "x"]  # List[str] elements too


def test_readme_mixed_precision_no_passes_the_training_check():
    cfg = load_config(TrainConfig, None, ["train.mixed_precision=no"])
    assert cfg.train.mixed_precision == "no"
    from fffvdi.train.checks import check_train_config

    with pytest.raises(ConfigError) as info:  # the next problem (no dataset here), not the precision
        load_config(TrainConfig, None, ["train.mixed_precision=no", "data.root=/nonexistent/data"],
                    check=check_train_config)
    assert "mixed_precision" not in str(info.value)


def test_str_keys_take_the_text_written_in_a_yaml(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("train:\n  mixed_precision: no\n  weight_dtype: 'off'\n  gradient_checkpointing: no\n"
                    "optim:\n  lr_scheduler: on\ndata:\n  root: 1e3\n")
    cfg = load_config(TrainConfig, path)
    assert cfg.train.mixed_precision == "no" and cfg.train.weight_dtype == "off"  # plain and quoted alike
    assert cfg.optim.lr_scheduler == "on" and cfg.data.root == "1e3"  # a number-looking text stays as written
    assert cfg.train.gradient_checkpointing is False  # a bool key keeps YAML's booleans
    assert load_config(TrainConfig, path, ["train.mixed_precision=fp16"]).train.mixed_precision == "fp16"


def test_bool_and_optional_keys_keep_their_meaning():
    cfg = load_config(InferenceConfig, None, ["output.overwrite=true", "output.save_frames=no", "output.dir=on",
                                              "model.checkpoint=null", "model.variant=off", "sampling.seed=7"])
    assert cfg.output.overwrite is True and cfg.output.save_frames is False  # real bool keys: YAML booleans
    assert cfg.output.dir == "on" and cfg.model.variant == "off"  # Optional[str]: the text
    assert cfg.model.checkpoint is None and cfg.sampling.seed == 7  # null is still None, ints still ints


def _train_output(*launcher: str) -> tuple[int, list[str]]:
    cmd = [*launcher, "scripts/train.py", "train.mixed_precision=fp17"]
    res = subprocess.run(cmd, check=False, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return res.returncode, [line for line in res.stdout.splitlines() if line.strip()]


def test_train_error_is_the_last_line():
    code, lines = _train_output(sys.executable)
    assert code == 2 and lines[-1].startswith("error: train.mixed_precision='fp17': use one of no, fp16, bf16"), lines
    assert "accelerate" not in lines[-1]  # no launcher, no note about it


@pytest.mark.slow
def test_train_error_under_accelerate_launch():
    """accelerate prints its traceback after any failed child; -q leaves our line last, without -q our line says so."""
    code, lines = _train_output(sys.executable, "-m", "accelerate.commands.launch", "-q", "--cpu")
    assert code != 0 and lines[-1].startswith("error: train.mixed_precision='fp17'"), lines
    code, lines = _train_output(sys.executable, "-m", "accelerate.commands.launch", "--cpu")
    ours = [line for line in lines if line.startswith("error: train.mixed_precision='fp17'")]
    assert code != 0 and len(ours) == 1 and "accelerate launch -q" in ours[0], lines


# ---------------------------------------------------------------- item 3: missing weights, said plainly and together


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a method (and so a model) is built: every problem must be found before."""
    import fffvdi.inpaint.methods

    monkeypatch.setattr(fffvdi.inpaint.methods, "build_method", lambda cfg: pytest.fail("a method was built"))


@pytest.fixture
def clip(tmp_path):
    frames = translating_frames((2, 0), 4)  # [4, 64, 96, 3]
    (tmp_path / "frames").mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / "frames" / f"{i:05d}.png"), f[..., ::-1])
    mask = np.zeros(frames.shape[1:3], np.uint8)
    mask[16:32, 32:48] = 255
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    return tmp_path / "frames", tmp_path / "mask.png"


def _errors(capsys, code: int) -> list[str]:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err and all(line.startswith("error: ") for line in err), (code, err)
    return err


def _refused(capsys, clip, out: Path, *flags: str) -> list[str]:
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else None
    code = CLI.main(["--video", str(clip[0]), "--mask", str(clip[1]), "--output", str(out), *flags])
    lines = _errors(capsys, code)
    assert (sorted(p.name for p in out.iterdir()) if out.is_dir() else None) == before  # nothing written
    assert not out.with_name(out.name + ".partial").exists()
    return lines


def test_missing_checkpoint_is_named_before_the_hub(tmp_path, clip, capsys, no_model):
    lines = _refused(capsys, clip, tmp_path / "out", "--checkpoint", str(tmp_path / "nonexistent" / "unet"))
    assert "no FFF-VDI UNet at" in lines[0] and "nonexistent" in lines[0] and "no such folder" in lines[0]
    assert "--checkpoint" in lines[0] and "OUTPUT_DIR/unet" in lines[0]  # the flag and the fix
    assert all("nonexistent" not in line for line in lines[1:])  # then the hub's own problem, if any


def test_readme_placeholder_checkpoint_is_explained(tmp_path, clip, capsys, no_model):
    lines = _refused(capsys, clip, tmp_path / "out", "--config", str(ROOT / "configs" / "inference.yaml"),
                     "--checkpoint", "CHECKPOINT/unet")
    assert "CHECKPOINT/unet" in lines[0] and "CHECKPOINT stands for your training run's folder" in lines[0]


def test_run_folder_instead_of_its_unet_is_pointed_at_unet(tmp_path, clip, tiny_svd_dir, capsys, no_model):
    (tmp_path / "run" / "unet").mkdir(parents=True)
    (tmp_path / "run" / "unet" / "config.json").write_text("{}")
    lines = _refused(capsys, clip, tmp_path / "out", "--checkpoint", str(tmp_path / "run"),
                     f"model.pretrained={tiny_svd_dir}")
    assert lines == [(f"error: no FFF-VDI UNet at {tmp_path / 'run'} (--checkpoint, model.checkpoint): config.json "
                      f"missing; pass {tmp_path / 'run' / 'unet'}")]


def test_fffvdi_without_checkpoint_is_refused_on_the_hub_model(tmp_path, clip, capsys, no_model):
    lines = _refused(capsys, clip, tmp_path / "out", "--method", "fffvdi")
    assert lines[0].startswith("error: method fffvdi needs a checkpoint: pass --checkpoint")
    assert "--method propagate" in lines[0]


def test_fffvdi_without_checkpoint_runs_a_local_model(tiny_svd_dir):
    """configs/inference_tiny.yaml's smoke run: a local folder's unet/ is used as is, nothing is refused."""
    from fffvdi.inpaint.checks import model_problems

    cfg = load_config(InferenceConfig, ROOT / "configs" / "inference_tiny.yaml", [f"model.pretrained={tiny_svd_dir}"])
    assert cfg.method == "fffvdi" and cfg.model.checkpoint is None and model_problems(cfg) == []
    cfg = load_config(InferenceConfig, None, ["method=propagate", "model.checkpoint=/nonexistent"])
    assert model_problems(cfg) == []  # the weight-free methods load no model


def test_every_problem_of_a_run_is_reported_together(tmp_path, clip, capsys, no_model):
    out = tmp_path / "out"
    out.mkdir()
    (out / "inpainted.mp4").write_bytes(b"an earlier result")
    lines = _refused(capsys, clip, out, "--checkpoint", str(tmp_path / "nonexistent" / "unet"),
                     f"model.pretrained={tmp_path / 'no_svd'}")
    assert len(lines) == 3, lines
    assert "no FFF-VDI UNet at" in lines[0] and "model folder not found" in lines[1]  # local paths, in that order
    assert f"output folder {out} exists; pass --overwrite" in lines[2]
    assert (out / "inpainted.mp4").read_bytes() == b"an earlier result"


def test_a_bad_video_and_an_existing_output_come_together(tmp_path, clip, capsys, no_model):
    out = tmp_path / "out"
    out.mkdir()
    (out / "inpainted.mp4").write_bytes(b"x")
    code = CLI.main(["--video", str(tmp_path / "no_video"), "--mask", str(clip[1]), "--output", str(out),
                     "--method", "telea"])
    lines = _errors(capsys, code)
    assert len(lines) == 2 and "no_video" in lines[0] and "output folder" in lines[1], lines


def test_a_batch_refuses_fffvdi_without_checkpoint_before_reading_videos(tmp_path, clip, capsys, no_model):
    listing = tmp_path / "clips.txt"
    listing.write_text(f"{clip[0]} {clip[1]}\n")
    code = CLI.main(["--video-list", str(listing), "--method", "fffvdi", "--output", str(tmp_path / "many")])
    lines = _errors(capsys, code)
    assert "method fffvdi needs a checkpoint" in lines[0] and not (tmp_path / "many").exists()


def test_model_source_problems_are_all_listed_local_first(tmp_path, tiny_svd_dir, monkeypatch):
    import fffvdi.models.loading
    from fffvdi.errors import ModelLoadError
    from fffvdi.models.loading import check_model_source, model_source_problems

    assert model_source_problems(str(tiny_svd_dir)) == []
    found = model_source_problems(str(tmp_path / "no_svd"), str(tmp_path / "no_unet"))
    assert len(found) == 2 and "no_unet" in found[0] and "no_svd" in found[1]
    hub = model_source_problems("someorg/not-cached-svd", str(tmp_path / "no_unet"))  # HF_HUB_OFFLINE=1
    assert len(hub) == 2 and "no_unet" in hub[0] and "not in the local cache" in hub[1]
    with pytest.raises(ModelLoadError, match="no_unet.*; .*no_svd"):  # one line for the entry points that raise
        check_model_source(str(tmp_path / "no_svd"), str(tmp_path / "no_unet"))
    monkeypatch.setattr(fffvdi.models.loading, "_hub_cache_only", lambda source, subfolders: "")  # hub online
    assert model_source_problems("someorg/svd", str(tmp_path / "no_unet")) == [(
        f"no FFF-VDI UNet at {tmp_path / 'no_unet'} (model.checkpoint): no such folder; pass the unet/ folder "
        "scripts/train.py saves (OUTPUT_DIR/unet or OUTPUT_DIR/checkpoint-N/unet)")]


def test_app_says_what_fffvdi_needs():
    from fffvdi.app.commands import RunSettings

    with pytest.raises(InputError, match="fffvdi needs a checkpoint: enter the unet/ folder scripts/train.py saves"):
        RunSettings(method="fffvdi").check()
