"""Config loading: defaults, YAML, dotlist overrides, unknown keys and bad values."""
import re
import pytest
from omegaconf import OmegaConf

from fffvdi.config import FlowConfig, ModelConfig, dtype_from_name, load_config, save_config
from fffvdi.errors import ConfigError
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class _Schema:
    model: ModelConfig = field(default_factory=ModelConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    steps: int = 25


def test_defaults_yaml_and_overrides(tmp_path):
    yaml = tmp_path / "c.yaml"
    yaml.write_text("steps: 10\nmodel:\n  dtype: float32\n")
    cfg = load_config(_Schema, yaml, ["flow.method=raft_small", "steps=7"])
    assert cfg.steps == 7  # the command line wins over the file
    assert cfg.model.dtype == "float32"  # the file wins over the defaults
    assert cfg.flow.method == "raft_small"
    assert cfg.flow.raft_iters == 20  # untouched default


def test_unknown_key_in_yaml_names_key_and_file(tmp_path):
    yaml = tmp_path / "c.yaml"
    yaml.write_text("model:\n  pretrainedd: x\n")
    with pytest.raises(ConfigError, match=r"model\.pretrainedd.*c\.yaml"):
        load_config(_Schema, yaml)


def test_unknown_override_and_bad_type():
    with pytest.raises(ConfigError, match="stepz"):
        load_config(_Schema, None, ["stepz=3"])
    with pytest.raises(ConfigError, match="steps"):
        load_config(_Schema, None, ["steps=many"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(_Schema, None, ["steps"])


def test_errors_say_whether_the_value_came_from_the_command_line_or_the_file(tmp_path):
    yaml = tmp_path / "c.yaml"
    yaml.write_text("steps: 10\n")
    with pytest.raises(ConfigError, match=r"stepz.*\(on the command line\)") as err:
        load_config(_Schema, yaml, ["stepz=3"])
    assert "c.yaml" not in str(err.value)  # the file is innocent
    yaml.write_text("stepz: 10\n")
    with pytest.raises(ConfigError, match=r"stepz.*\(in .*c\.yaml\)"):
        load_config(_Schema, yaml, ["steps=3"])

    def check(cfg):
        if cfg.steps < 1:
            raise ConfigError(f"steps={cfg.steps}: must be >= 1", key="steps")

    yaml.write_text("steps: 0\n")
    with pytest.raises(ConfigError, match=r"steps=0: must be >= 1 \(set in .*c\.yaml\)"):
        load_config(_Schema, yaml, [], check=check)
    with pytest.raises(ConfigError, match=r"steps=-1: must be >= 1 \(set on the command line\)"):
        load_config(_Schema, yaml, ["steps=-1"], check=check)
    with pytest.raises(ConfigError, match=r"steps=0: must be >= 1 \(set by default\)"):
        load_config(_Schema, None, ["model.dtype=float32"], check=lambda cfg: check(OmegaConf.merge(cfg, {"steps": 0})))


def test_missing_file_and_broken_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(_Schema, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(_Schema, bad)


def test_save_round_trip(tmp_path):
    cfg = load_config(_Schema, None, ["steps=3", "model.checkpoint=/x/y"])
    path = save_config(cfg, tmp_path / "out" / "config.yaml")
    again = load_config(_Schema, path)
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg)


def test_dtype_names():
    import torch

    assert dtype_from_name("bf16") is torch.bfloat16
    with pytest.raises(ConfigError, match="float64"):
        dtype_from_name("float64")


def test_shipped_configs_are_valid():
    """Every YAML in configs/ loads against its schema (catches typos in shipped files)."""
    from pathlib import Path

    from fffvdi.inpaint.config import InferenceConfig

    root = Path(__file__).resolve().parents[1] / "configs"
    for name in ("inference.yaml", "inference_tiny.yaml"):
        load_config(InferenceConfig, root / name)


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    from fffvdi.inpaint.config import InferenceConfig
    from fffvdi.train.config import TrainConfig

    schema = TrainConfig if path.name.startswith("train") else InferenceConfig
    required = sorted(OmegaConf.missing_keys(OmegaConf.load(path)))  # `???`: values the user must pass
    if required:
        with pytest.raises(ConfigError, match=" and ".join(re.escape(k) for k in required)):
            load_config(schema, path)  # one line naming every required key, before anything runs
    cfg = load_config(schema, path, [f"{k}=/weights/file.pth" for k in required])
    assert cfg is not None and all(OmegaConf.select(cfg, k) == "/weights/file.pth" for k in required)


def test_training_has_no_model_dtype_key():
    from fffvdi.train.config import TrainConfig

    with pytest.raises(ConfigError, match="dtype"):
        load_config(TrainConfig, None, ["model.dtype=float16"])  # precision is train.mixed_precision / weight_dtype
    assert load_config(TrainConfig, None, ["model.propagation.arch=official"]).model.propagation.arch == "official"


def test_unset_canvas_follows_the_checkpoint_training_size(tmp_path):
    from fffvdi.inpaint.config import InferenceConfig, resolve_canvas

    run = tmp_path / "run"
    (run / "unet").mkdir(parents=True)
    (run / "config.yaml").write_text("data:\n  size: [128, 256]\n")
    cfg = load_config(InferenceConfig, None, [f"model.checkpoint={run / 'unet'}"])
    resolve_canvas(cfg)
    assert (cfg.window.height, cfg.window.width) == (128, 256)
    cfg = load_config(InferenceConfig, None, [f"model.checkpoint={run / 'unet'}", "window.width=512"])
    resolve_canvas(cfg)
    assert (cfg.window.height, cfg.window.width) == (128, 512)  # an explicit value wins
    cfg = load_config(InferenceConfig, None, [])
    resolve_canvas(cfg)
    assert (cfg.window.height, cfg.window.width) == (576, 1024)  # no checkpoint: SVD-XT's size


def test_first_difference_names_the_nested_key_and_both_values(tmp_path):
    from fffvdi.files import first_difference, write_atomic

    old = {"sampling": {"seed": 42, "steps": 25}, "video": "a"}
    assert first_difference(old, {"sampling": {"seed": 42, "steps": 25}, "video": "a"}) is None
    assert first_difference(old, {"sampling": {"seed": 7, "steps": 25}, "video": "a"}) == ("sampling.seed", 42, 7)
    assert first_difference(old, {"sampling": {"seed": 42, "steps": 25}}) == ("video", "a", None)
    path = write_atomic(tmp_path / "x.json", '{"a": 1}')
    assert path.read_text() == '{"a": 1}' and not (tmp_path / "x.json.tmp").exists()
