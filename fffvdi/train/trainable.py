"""Which weights train: parameters selected by name patterns (the rest frozen), and a check that every process of a
distributed run still holds the same ones."""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch

from fffvdi.errors import ConfigError

logger = logging.getLogger("fffvdi.train")


def select_trainable(module: torch.nn.Module, patterns: Sequence[str], key: str = "trainable") -> list[torch.nn.Parameter]:
    """Freeze every parameter except those whose name contains one of `patterns` (config `key`); returns the trainable
    ones."""
    if not patterns:
        raise ConfigError("trainable is empty; list name patterns, e.g. trainable=[propagation.,temporal_transformer_blocks]",
                          key=key)
    named = list(module.named_parameters())
    unused = [p for p in patterns if not any(p in name for name, _ in named)]
    if unused:
        raise ConfigError(f"{key} pattern {unused[0]!r} matches no parameter of the FFF-VDI UNet; use substrings of "
                          "names like 'propagation.', 'temporal_transformer_blocks', 'time_pos_embed', 'time_mixer'",
                          key=key)
    params = []
    for name, param in named:
        param.requires_grad_(any(p in name for p in patterns))
        if param.requires_grad:
            params.append(param)
    return params


def check_ranks_agree(accelerator: Any, params: Sequence[torch.nn.Parameter]) -> None:
    """Raise unless every process holds the same trainable weights (DDP's gradient all-reduce keeps them equal;
    if it broke, each rank would silently train its own model and only rank 0's would be saved)."""
    sums = torch.stack([p.detach().double().sum() for p in params]).to(accelerator.device)  # [P]
    everyone = accelerator.gather(sums[None])  # [R, P]
    spread = (everyone - everyone[:1]).abs().max().item()
    if spread > 1e-6 * max(1.0, everyone.abs().max().item()):
        raise RuntimeError(
            f"the {accelerator.num_processes} training processes hold different weights (max difference of "
            f"parameter sums {spread:.3g}): gradients were not synchronised; check the distributed setup"
        )
    logger.info("weights agree across %d processes", accelerator.num_processes)
