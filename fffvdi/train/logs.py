"""What a training run reports: the flattened config (TensorBoard hparams) and, every `logging.every_steps`
optimizer steps, the mean loss, the per-region MSE (inside / outside the hole), learning rate, grad norm, steps/s
and GPU memory, to the tracker, the log and OUTPUT_DIR/logs/metrics.jsonl."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

logger = logging.getLogger("fffvdi.train")

REPORT_TO = ("tensorboard", "none")  # logging.report_to: accelerate's tracker (into output_dir/logs), or none
REGIONS = ("mse_hole", "mse_known")  # EDMDenoiser.loss logs averaged like the loss


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """{'train.lr': 1e-05, ...} with lists and None as strings (what TensorBoard's hparams accept)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            out[prefix] = node if isinstance(node, (int, float, str, bool)) else str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


class StepLog:
    """Sums micro-step losses into optimizer steps and reports their means every `logging.every_steps` steps."""

    def __init__(self, accelerator: Any, cfg: DictConfig) -> None:
        self.accelerator, self.cfg = accelerator, cfg
        self.jsonl = Path(cfg.checkpoint.output_dir) / "logs" / "metrics.jsonl"
        self.step_loss, self.step_regions = 0.0, dict.fromkeys(REGIONS, 0.0)  # this optimizer step's, so far
        self._restart()

    def _restart(self) -> None:
        """Begin a new reporting period."""
        dev = self.accelerator.device
        self.loss, self.regions = torch.zeros((), device=dev), torch.zeros(len(REGIONS), device=dev)
        self.steps, self.start = 0, time.perf_counter()

    def micro_step(self, loss: float, regions: dict[str, float]) -> None:
        """Add one batch's loss and region MSEs, as a 1/gradient_accumulation_steps share of the optimizer step."""
        share = self.cfg.train.gradient_accumulation_steps
        self.step_loss += loss / share
        for key in REGIONS:
            self.step_regions[key] += regions.get(key, 0.0) / share

    def optimizer_step(self, step: int, lr: float, grad_norm: Any) -> float:
        """Close optimizer step `step` (reporting when due); returns its loss."""
        loss, regions = self.step_loss, self.step_regions
        self.step_loss, self.step_regions = 0.0, dict.fromkeys(REGIONS, 0.0)
        self.loss, self.steps = self.loss + loss, self.steps + 1
        self.regions = self.regions + torch.tensor([regions[k] for k in REGIONS], device=self.regions.device)
        if step % self.cfg.logging.every_steps == 0 or step == self.cfg.train.max_steps:
            self._report(step, lr, grad_norm)
        return loss

    def _report(self, step: int, lr: float, grad_norm: Any) -> None:
        means = self.accelerator.reduce(torch.cat([self.loss[None], self.regions]) / self.steps, reduction="mean")
        logs = {"loss": means[0].item(), **{k: v.item() for k, v in zip(REGIONS, means[1:])}, "lr": lr,
                "steps_per_s": self.steps / (time.perf_counter() - self.start)}
        if grad_norm is not None:
            logs["grad_norm"] = float(grad_norm)
        if torch.cuda.is_available():
            logs["max_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        self.accelerator.log(logs, step=step)
        if self.accelerator.is_main_process:  # plain-text copy; a resumed run appends (the last line of a step wins)
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
            with open(self.jsonl, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **logs}) + "\n")
        logger.info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in logs.items()))
        self._restart()
