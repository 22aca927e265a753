"""README's offline commands run as written, in order, on a fresh copy of the repository.

Convention: every fenced ```bash block's opening fence is directly preceded by one marker line (invisible when
rendered): `<!-- offline -->`, the block runs offline on CPU exactly as written, in the order the blocks appear;
or `<!-- needs: REASON ... -->` with reasons from NEEDS, the block is left out and listed with its reasons.
Every offline command needs an entry in EXPECTED saying what it writes; the evaluation commands are also
checked against the README table that follows their block.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MARKER = "<!-- offline -->"
NEEDS_MARKER = re.compile(r"<!-- needs: ([a-z ]+) -->")
# Why a block cannot run here (offline, on CPU, in a test): the words a `needs:` marker may use.
NEEDS = {
    "gpu": "a CUDA GPU",
    "gpus": "several GPUs or machines (accelerate launch --multi_gpu with 8-16 processes)",
    "weights": "real weights (SVD-XT, a fine-tuned checkpoint, RAFT, I3D)",
    "data": "a real dataset (DAVIS, YouTube-VOS) at /data",
    "network": "the network (pip, the hub)",
    "server": "a server that runs until stopped (tests/test_app_browser.py drives it)",
    "suite": "the test suite itself (running it from a test would recurse)",
}
# Lines in an offline command's output that read like a failure; the documented demos must not print them.
ALARMS = ("expect poor results", "No propagation.safetensors")
# Tokens that mean "fill this in": a marked block must not contain them.
PLACEHOLDERS = ("CHECKPOINT", "/data/", "$", "...", "DIR", "FILE", "<", ">")
# What the commands write: left out of the copy so that it starts as a fresh clone would.
OUTPUT_PATHS = ("results/", "outputs/", "data/", "eval/", "assets/tiny_svd/")
DEMO_FRAMES = 40  # assets/demo/frames
COMMAND_TIMEOUT_S = 300


@dataclass
class Command:
    """One README command: its text, the README line it starts on, and the table right after its block."""

    text: str
    line: int
    table_after: dict[str, dict[str, str]]


def _table_after(lines: list[str], start: int) -> dict[str, dict[str, str]]:
    """The markdown table within a few lines after `start`, as {first cell lowercased: {header: cell}}; {} if none."""
    i = start
    while i < len(lines) and i < start + 3 and not lines[i].startswith("|"):
        i += 1
    rows = []
    while i < len(lines) and lines[i].startswith("|"):
        rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
        i += 1
    if len(rows) < 3:
        return {}
    header = rows[0]
    return {r[0].lower(): dict(zip(header, r)) for r in rows[2:]}  # rows[1] is the |---| rule


def left_out_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(README line, reasons) of every ```bash block marked `needs:`; AssertionError for a block with no marker
    or an unknown reason."""
    lines, out = text.splitlines(), []
    for i, line in enumerate(lines):
        if line.strip() != "```bash":
            continue
        above = lines[i - 1].strip() if i else ""
        needs = NEEDS_MARKER.fullmatch(above)
        assert above == MARKER or needs, (
            f"README.md:{i + 1}: a ```bash block without a marker; put {MARKER} or <!-- needs: REASON ... --> "
            f"(reasons: {', '.join(NEEDS)}) on the line above it"
        )
        if needs:
            reasons = needs.group(1).split()
            unknown = [r for r in reasons if r not in NEEDS]
            assert reasons and not unknown, f"README.md:{i}: unknown reason(s) {unknown}; use {', '.join(NEEDS)}"
            out.append((i + 1, reasons))
    return out


def offline_commands(text: str) -> list[Command]:
    """The commands of every block marked offline, in README order (comments dropped, continuations joined)."""
    lines = text.splitlines()
    commands: list[Command] = []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        assert i + 1 < len(lines) and lines[i + 1].strip() == "```bash", (
            f"README.md:{i + 1}: {MARKER} must be directly followed by a ```bash fence"
        )
        j, block = i + 2, []
        while j < len(lines) and lines[j].strip() != "```":
            block.append((j + 1, lines[j]))
            j += 1
        assert j < len(lines), f"README.md:{i + 1}: the offline block is never closed"
        table = _table_after(lines, j + 1)
        pending, first = "", 0
        for number, raw in block:
            stripped = raw.strip()
            if not pending and (not stripped or stripped.startswith("#")):
                continue
            first = first or number
            if stripped.endswith("\\"):
                pending += stripped[:-1].rstrip() + " "
                continue
            commands.append(Command(pending + stripped, first, table))
            pending, first = "", 0
    return commands


def _argv(command: Command) -> list[str]:
    """The command's arguments without its trailing comment."""
    return shlex.split(command.text, comments=True)


def _copy_repository(dest: Path) -> None:
    """Copy what a clone holds (tracked and new, not ignored files; no outputs of the commands) to `dest`."""
    res = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, text=True)
    if res.returncode == 0:
        files = [REPO / f for f in res.stdout.split("\0") if f]
    else:  # not a git checkout (e.g. an unpacked archive): everything but caches
        files = [p for p in REPO.rglob("*") if p.is_file() and ".git" not in p.parts and "__pycache__" not in p.parts]
    for src in files:
        rel = src.relative_to(REPO).as_posix()
        if not src.is_file() or rel.startswith(OUTPUT_PATHS):
            continue  # deleted in the working tree, or a previous run's output
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)


def _environment(root: Path) -> dict[str, str]:
    """Offline, CPU only, the copy's fffvdi first on the path, this interpreter's `python` and `accelerate`."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="")  # the blocks document CPU runs
    # One torch thread per process, as conftest.py sets for the suite: on a shared 2-core runner, idle
    # worker threads spinning for a busy core made propagate's small tensor ops 10-100x slower.
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


# --------------------------------------------------------------------- what each command must write


def _inference(name: str) -> Callable[[Path, Command], None]:
    def check(root: Path, command: Command) -> None:
        out = root / "results" / name
        assert (out / "inpainted.mp4").is_file(), f"{command.text}: no {out / 'inpainted.mp4'}"
        assert len(list((out / "frames").glob("*.png"))) == DEMO_FRAMES, f"{command.text}: {out / 'frames'} incomplete"
    return check


def _masks(out: str, count: int, preview: str) -> Callable[[Path, Command], None]:
    def check(root: Path, command: Command) -> None:
        found = len(list((root / out).glob("*.png")))
        assert found == count, f"{command.text}: {found} masks in {out}, not {count}"
        assert (root / preview).is_file(), f"{command.text}: no {preview}"
    return check


def _both(*checks: Callable[[Path, Command], None]) -> Callable[[Path, Command], None]:
    def check(root: Path, command: Command) -> None:
        for one in checks:
            one(root, command)
    return check


def _folders(parent: str, count: int) -> Callable[[Path, Command], None]:
    def check(root: Path, command: Command) -> None:
        found = sorted(p for p in (root / parent).iterdir() if p.is_dir()) if (root / parent).is_dir() else []
        assert len(found) == count, f"{command.text}: {count} folders expected in {parent}, found {len(found)}"
    return check


def _file(path: str) -> Callable[[Path, Command], None]:
    def check(root: Path, command: Command) -> None:
        assert (root / path).is_file(), f"{command.text}: {path} was not written"
    return check


def _batch(out: str, videos: int, frames: int) -> Callable[[Path, Command], None]:
    def check(root: Path, command: Command) -> None:
        summary = json.loads((root / out / "summary.json").read_text(encoding="utf-8"))
        assert summary["counts"] == {"done": videos, "failed": 0, "skipped": 0}, f"{command.text}: {summary['counts']}"
        for video in summary["videos"]:
            found = len(list((root / video["output"] / "frames").glob("*.png")))
            assert found == frames, f"{command.text}: {video['output']} has {found} frames, not {frames}"
    return check


# README column -> (summary.json metric, tolerance in units of the last printed digit)
COLUMNS = {"PSNR": "psnr", "SSIM": "ssim", "masked PSNR": "masked_psnr"}
EWARP_COLUMN = "E_warp (x1e-3"  # header prefix; the header may add the ground truth's value


def _evaluation(root: Path, command: Command) -> None:
    """summary.json written, and its metrics equal the README table's row for this method as printed there."""
    argv = _argv(command)
    method, output = argv[argv.index("--method") + 1], argv[argv.index("--output") + 1]
    metrics = json.loads((root / output / "summary.json").read_text(encoding="utf-8"))["metrics"]
    row = command.table_after.get(method.lower())
    assert row, f"README.md:{command.line}: no row '{method}' in the table after this block"
    for header, printed in row.items():
        key = COLUMNS.get(header) or ("ewarp_x1e-3" if header.startswith(EWARP_COLUMN) else None)
        if key is None:
            continue
        digits = len(printed.split(".")[1]) if "." in printed else 0
        assert abs(metrics[key] - float(printed)) <= 2 * 10**-digits, (
            f"README.md:{command.line}: {method} {header} is {printed} in README but {metrics[key]:.{digits + 2}f} now; "
            "update the README row (and say why) or fix the regression"
        )


EXPECTED: list[tuple[str, Callable[[Path, Command], None]]] = [
    (r"scripts/inference\.py .*--method propagate", _inference("demo-propagate")),
    (r"scripts/inference\.py .*configs/inference_tiny\.yaml", _inference("demo-fffvdi")),
    (r"scripts/inference\.py .*--box \S+ --mask-frame 0 --output results/demo-box$",
     _both(_inference("demo-box"),
           _masks("results/demo-box/masks", DEMO_FRAMES, "results/demo-box/masks/masks_preview.mp4"))),
    (r"scripts/make_masks\.py .*--output results/demo-masks$",
     _masks("results/demo-masks", DEMO_FRAMES, "results/demo-masks/masks_preview.mp4")),
    (r"scripts/make_tiny_model\.py assets/tiny_svd$", _file("assets/tiny_svd/model_index.json")),
    (r"make_synthetic_dataset\.py data/many --eval --videos 3 ", _folders("data/many/test_masks", 3)),
    (r"scripts/inference\.py --video data/many/JPEGImages ", _batch("results/many-telea", 3, 10)),
    (r"make_synthetic_dataset\.py data/synthetic --videos 4 ", _folders("data/synthetic/Annotations", 4)),
    (r"make_synthetic_dataset\.py data/synthetic_eval --eval --videos 4 ", _folders("data/synthetic_eval/test_masks", 4)),
    (r"^accelerate launch --cpu .*configs/train_tiny\.yaml$", _file("outputs/tiny/unet/config.json")),
    (r"^accelerate launch --multi_gpu .*checkpoint\.output_dir=outputs/tiny_ddp", _file("outputs/tiny_ddp/unet/config.json")),
    (r"scripts/evaluate\.py .*--method \w+ --output \S+", _evaluation),
]


def _expectation(command: Command) -> Callable[[Path, Command], None]:
    matches = [check for pattern, check in EXPECTED if re.search(pattern, " ".join(_argv(command)))]
    assert len(matches) == 1, (
        f"README.md:{command.line}: {len(matches)} entries of EXPECTED in tests/test_readme.py match "
        f"{command.text!r}; give every offline command exactly one"
    )
    return matches[0]


# --------------------------------------------------------------------- tests


def _left_out_report(text: str) -> str:
    """One line per block the test does not run: where it is, its first command, why."""
    lines = text.splitlines()
    return "\n".join(f"README.md:{line}: {lines[line].strip()!r} needs {'; '.join(NEEDS[r] for r in reasons)}"
                     for line, reasons in left_out_blocks(text))


def test_offline_blocks_are_well_formed():
    """Fast check of the convention: every block marked, no placeholders, every command has an expectation."""
    text = README.read_text(encoding="utf-8")
    print("README blocks left out:\n" + _left_out_report(text))
    commands = offline_commands(text)
    assert len(commands) >= 8, f"only {len(commands)} offline commands found; is the {MARKER} marker still there?"
    for command in commands:
        bad = [p for p in PLACEHOLDERS if p in " ".join(_argv(command))]
        assert not bad, f"README.md:{command.line}: offline command {command.text!r} has placeholder(s) {bad}"
        _expectation(command)


def test_parser_joins_continuations_and_reads_the_table_after():
    text = "\n".join([
        "text", MARKER, "```bash", "# a comment", "python a.py \\", "    --x 1  # trailing", "", "python b.py", "```",
        "", "| method | PSNR |", "|---|---|", "| Telea | 30.00 |", "```bash", "python not_marked.py", "```",
    ])
    commands = offline_commands(text)
    assert [c.text for c in commands] == ["python a.py --x 1  # trailing", "python b.py"]
    with pytest.raises(AssertionError, match="README.md:14: a ```bash block without a marker"):
        left_out_blocks(text)  # `python not_marked.py`
    assert [c.line for c in commands] == [5, 8]
    assert _argv(commands[0]) == ["python", "a.py", "--x", "1"]
    assert commands[1].table_after == {"telea": {"method": "Telea", "PSNR": "30.00"}}
    marked = text.replace("```bash\npython not_marked", "<!-- needs: gpu weights -->\n```bash\npython not_marked")
    assert left_out_blocks(marked) == [(15, ["gpu", "weights"])]
    with pytest.raises(AssertionError, match=r"unknown reason\(s\) \['cluster'\]"):
        left_out_blocks(marked.replace("gpu weights", "gpu cluster"))


@pytest.mark.slow
def test_readme_offline_commands_run_in_order(tmp_path):
    """Every offline README command exits 0 on a fresh copy, in order, and writes what it promises."""
    if shutil.which("accelerate", path=_environment(tmp_path)["PATH"]) is None:
        pytest.fail("the README's training commands need `accelerate` on PATH (pip install -r requirements.txt)")
    root = tmp_path / "repo"
    _copy_repository(root)
    env = _environment(root)
    timings, text = [], README.read_text(encoding="utf-8")
    for command in offline_commands(text):
        check = _expectation(command)
        start = time.perf_counter()
        res = subprocess.run(_argv(command), cwd=root, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        timings.append(f"{time.perf_counter() - start:6.1f} s  {command.text}")
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-5:])
        assert res.returncode == 0, f"README.md:{command.line}: {command.text!r} exited {res.returncode}:\n{tail}"
        alarms = [line for line in (res.stdout + res.stderr).splitlines() if any(a in line for a in ALARMS)]
        assert not alarms, f"README.md:{command.line}: the documented command prints alarming lines: {alarms}"
        check(root, command)
    print("\n".join(timings))
    print("README blocks left out:\n" + _left_out_report(text))
