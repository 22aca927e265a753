"""Benchmarks of scripts/benchmark.py and scripts/gpu_check.py: `measure` (timings, memory, machine), `presets` (model
presets, synthetic video), `model` (UNet inputs, a training step) and `video` (whole-video sections)."""
