"""Training configuration schema (configs/train.yaml overrides these defaults; `key=value` overrides those);
`fffvdi.train.checks` checks it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from fffvdi.config import DEFAULT_PRETRAINED, FlowConfig, PropagationConfig
from fffvdi.diffusion.recipe import COND_AUG_MEAN, COND_AUG_STD, P_MEAN, P_STD

# Temporal layers of diffusers' UNetSpatioTemporalConditionModel + the FFF-VDI propagation module.
# Names are substrings of FFFVDIUNet parameter names ("unet.down_blocks.0.attentions.0.temporal_transformer_blocks...",
# "propagation.fusion..."). Add "temporal_res_block" to also train the temporal ResNet convolutions.
DEFAULT_TRAINABLE = ["propagation.", "temporal_transformer_blocks", "time_pos_embed", "time_mixer"]
# LoRA targets: regexes full-matched against Linear layer names of the diffusers UNet, here the attention projections
# (self- and cross-attention) and both feed-forwards of every temporal transformer block.
DEFAULT_LORA_TARGETS = [r".*temporal_transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)",
                        r".*temporal_transformer_blocks\.\d+\.(ff|ff_in)\.net\.(0\.proj|2)"]


@dataclass
class TrainMaskConfig:
    """Mixture of training hole masks (see fffvdi/data/masks.py for each kind's keyword arguments)."""

    # Kind -> probability: rectangles | blobs | objects | official (the authors' box generator, quirks included)
    probs: Dict[str, float] = field(default_factory=lambda: {"rectangles": 0.5, "blobs": 0.5})
    rectangles: Dict[str, Any] = field(default_factory=dict)  # moving_rectangles kwargs, e.g. side_range: [0.2, 0.8]
    blobs: Dict[str, Any] = field(default_factory=dict)  # free_form_blob kwargs
    objects: Dict[str, Any] = field(default_factory=dict)  # object_masks kwargs (needs ROOT/Annotations/)
    official: Dict[str, Any] = field(default_factory=dict)  # official_box kwargs (fffvdi/data/official_masks.py)
    # Redraw masks covering less than this fraction of the clip. Not applied to the official kind: the release keeps
    # its empty clips (about 9 % at 512x256, the box pasted above the frame), so official masks may be all zeros.
    min_area: float = 0.005


@dataclass
class DataConfig:
    """Training clips from a YouTube-VOS style folder (ROOT/JPEGImages/<video_id>/*.jpg)."""

    root: str = "data/youtube-vos/train"  # dataset root with JPEGImages/ (and optional Annotations/)
    video_list: Optional[str] = None  # text file of video ids to use (one per line); None = every video
    num_frames: int = 25  # frames per clip (25 for SVD-XT, 14 for SVD)
    size: List[int] = field(default_factory=lambda: [256, 512])  # (H, W) plain resize; multiples of 64
    # Frame resize to `size`, aspect not kept: area (OpenCV INTER_AREA on cv2-decoded frames) | bicubic (Pillow's
    # bicubic on Pillow-decoded frames, as the release's Image.resize default)
    resize: str = "area"
    frame_stride: Any = 1  # stride between clip frames: an int, or [lo, hi] drawn per clip
    hflip: float = 0.5  # probability of a horizontal flip of a clip (frames, masks and flows together)
    time_reverse: float = 0.0  # probability of playing a clip backwards
    masks: TrainMaskConfig = field(default_factory=TrainMaskConfig)
    samples_per_epoch: Optional[int] = None  # clips per epoch drawn from random videos; None = one clip per video
    num_workers: int = 4  # dataloader worker processes (they also estimate DIS flows, see flow.in_workers)
    # Conditioning cache (fffvdi/train/cache.py): VAE posteriors of each clip and its masked copy, CLIP embeddings and
    # completed latent-size flows, written at a clip's first use and read afterwards (no VAE/CLIP/flow work per step).
    # Entries are keyed by the clip's exact pixels and masks, i.e. by its augmentation draw (flip, reversal, masks):
    # flipping cached latents would not equal encoding flipped frames (the VAE and CLIP are not flip-equivariant).
    # Needs data.epoch_cycle >= 1 (so draws repeat) and train.cond_aug_space=latent. None = encode every step.
    cache_dir: Optional[str] = None
    # Epoch e draws the clips (start, stride, flip, masks) of epoch e % epoch_cycle: 0 = a new draw every epoch;
    # N >= 1 repeats N distinct draws per clip index (with cache_dir, the cache holds N entries per index).
    epoch_cycle: int = 0


@dataclass
class TrainFlowConfig(FlowConfig):
    """Flow estimation during training (FlowConfig's keys plus caching)."""

    in_workers: bool = True  # estimate DIS flows in the dataloader workers (RAFT always runs on the accelerator)
    cache_dir: Optional[str] = None  # read/write raw (uncompleted) pixel flows as .pt per clip; None = no cache


@dataclass
class OptimConfig:
    """AdamW (or 8-bit AdamW) and its learning-rate schedule."""

    name: str = "adamw"  # adamw (torch) | adamw8bit (bitsandbytes AdamW8bit: pip install bitsandbytes; CUDA only)

    lr: float = 1e-5  # peak learning rate (official recipe)
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW betas
    weight_decay: float = 1e-2  # decoupled weight decay
    eps: float = 1e-8  # AdamW epsilon
    use_8bit_adam: Optional[bool] = None  # replaced by optim.name: true is a ConfigError, false/null mean adamw
    max_grad_norm: float = 1.0  # gradient clipping by global norm; <= 0 disables clipping (norm still logged)
    lr_scheduler: str = "constant_with_warmup"  # any diffusers.optimization.get_scheduler name
    warmup_steps: int = 500  # linear warm-up from 0 to lr over this many optimizer steps


@dataclass
class EMAConfig:
    """Exponential moving average of the trainable weights (diffusers EMAModel)."""

    enabled: bool = False  # keep an EMA copy; validation and the final unet/ then use the EMA weights
    decay: float = 0.9999  # maximum decay (diffusers warms it up as (1 + step) / (10 + step))


@dataclass
class TrainLoopConfig:
    """Optimisation loop, precision and the FFF-VDI training recipe (SPEC section 4)."""

    max_steps: int = 100_000  # optimizer steps (each = gradient_accumulation_steps batches per process)
    batch_size: int = 1  # clips per process per micro-step
    gradient_accumulation_steps: int = 1  # micro-steps per optimizer step
    mixed_precision: str = "fp16"  # accelerate's value: no | fp16 | bf16 (fp16 AMP keeps trainable weights float32)
    gradient_checkpointing: bool = True  # recompute UNet/propagation activations in backward (less memory, slower)
    allow_tf32: bool = True  # TF32 matmuls on Ampere+ GPUs
    seed: int = 42  # seeds model-independent randomness; per-step noise is a function of (seed, step, process)
    weight_dtype: str = "auto"  # dtype of the frozen VAE/CLIP: auto (follows mixed_precision) | float32 | float16 | bfloat16
    vae_chunk_size: int = 8  # frames the VAE encodes at once
    offload_frozen: bool = False  # keep the frozen VAE/CLIP (train.weight_dtype) on the CPU, on the GPU only to encode
    # Frames the UNet sees per step: a random contiguous window of the (encoded) data.num_frames clip; None = all.
    # The UNet is frame-count agnostic: inference still runs SVD's 14/25-frame windows.
    frames_per_step: Optional[int] = None
    # Where conditioning noise sigma_c is added: pixel (masked frames before the VAE: SVD, official) | latent (to the
    # VAE latents of the masked frames; what data.cache_dir needs, as the cache stores noise-free latents)
    cond_aug_space: str = "pixel"
    p_mean: float = P_MEAN  # training noise ln(sigma) ~ N(p_mean, p_std^2) (EDM / SVD; fffvdi/diffusion/recipe.py)
    p_std: float = P_STD
    cond_aug_mean: float = COND_AUG_MEAN  # conditioning noise ln(sigma_c) ~ N(mean, std^2), added to the masked frames in
    cond_aug_std: float = COND_AUG_STD  # pixel space before the VAE; sigma_c is also the noise_aug_strength time id
    mask_weight: float = 0.0  # loss weight inside the latent hole is (1 + mask_weight) times the weight outside
    # CFG dropout, one uniform draw u per clip: u < drop_both drops the CLIP embedding AND the conditioning latents;
    # the next drop_image_embeds of [0, 1) drops only the embedding, the next drop_cond_latents only the latents.
    # So P(embedding dropped) = drop_both + drop_image_embeds, P(latents dropped) = drop_both + drop_cond_latents.
    # Dropped = zeros, exactly the unconditional input used by classifier-free guidance at inference.
    drop_image_embeds: float = 0.1
    drop_cond_latents: float = 0.1
    drop_both: float = 0.1
    cond_latents: str = "mode"  # conditioning latents: mode of the VAE posterior (= inference) | sample (official)
    clip_source: str = "masked"  # frame CLIP embeds: masked (frame 0 with its hole) | filled (hole propagated) | raw (leaks)
    fps: int = 7  # fps micro-condition (the same value inference passes; see fffvdi.diffusion.edm.added_time_ids)
    motion_bucket_id: int = 127  # SVD's motion micro-condition
    find_unused_parameters: bool = False  # DDP flag; set true when some trainable weights may get no gradient
    ema: EMAConfig = field(default_factory=EMAConfig)


@dataclass
class LoraConfig:
    """LoRA fine-tuning through peft (fffvdi/train/lora.py): adapters on the listed Linear layers, base weights frozen.
    When enabled, the top-level `trainable` list is not used; checkpoints hold only adapters + fully trained parts."""

    enabled: bool = False  # train LoRA adapters instead of the `trainable` weights
    rank: int = 16  # adapter rank r
    alpha: float = 16.0  # adapter scale is alpha / rank
    dropout: float = 0.0  # dropout on the adapter input
    target_modules: List[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))  # regexes (full match)
    full_train: List[str] = field(default_factory=lambda: ["propagation."])  # parameter-name substrings trained fully
    merge_on_save: bool = True  # final unet/ with adapters merged (no peft at inference); false: OUTPUT_DIR/lora
    # holds the adapters, merged later by scripts/merge_lora.py


@dataclass
class CheckpointConfig:
    """Where checkpoints go and how a run resumes."""

    output_dir: str = "outputs/train"  # run folder: checkpoint-N/, unet/, config.yaml, logs/, validation/
    every_steps: int = 1000  # save checkpoint-N every this many optimizer steps (0 = only the final unet/)
    total_limit: Optional[int] = 5  # keep at most this many checkpoint-N folders (oldest removed); None = all
    resume_from_checkpoint: Optional[str] = None  # null | latest (newest checkpoint-N in output_dir) | a checkpoint folder
    overwrite: bool = False  # start afresh in an output_dir that already holds checkpoints (deletes them)


@dataclass
class LoggingConfig:
    """Scalar logging."""

    every_steps: int = 10  # log loss, lr, grad norm, steps/s every this many optimizer steps
    report_to: str = "tensorboard"  # tensorboard (into output_dir/logs) | none


@dataclass
class ValidationConfig:
    """Periodic inpainting of one clip with the current weights; writes output_dir/validation/step-N.mp4."""

    every_steps: int = 1000  # 0 disables validation
    video: Optional[str] = None  # frames folder or video file; None = a clip of the training dataset
    mask: Optional[str] = None  # masks for `video` (folder, single image or video); required with `video`
    clip_index: int = 0  # dataset clip used when `video` is None (drawn with validation.seed)
    num_steps: int = 25  # Euler sampling steps
    noise_aug_strength: float = 0.02  # conditioning noise at inference
    min_guidance_scale: float = 1.0  # per-frame CFG, frame 0 ...
    max_guidance_scale: float = 3.0  # ... to the last frame
    first_frame_filling: bool = True  # FFF-VDI's first-frame noise filling
    seed: int = 0  # sampling / clip seed (the same clip and noise at every validation)
    fps: float = 7.0  # fps of the written mp4


@dataclass
class TrainModelConfig:
    """Where training starts from. Precision is not a model key here: `train.mixed_precision` and
    `train.weight_dtype` decide it."""

    pretrained: str = DEFAULT_PRETRAINED  # hub id or local folder in diffusers layout
    checkpoint: Optional[str] = None  # a saved FFF-VDI UNet folder to start from (e.g. a previous run's unet/)
    variant: Optional[str] = None  # weight variant on the hub, e.g. "fp16" to download half-size files
    propagation: PropagationConfig = field(default_factory=PropagationConfig)  # module built when none is saved
    device: str = "auto"  # auto (accelerate's choice) | cpu (train on the CPU even when a GPU is present)


@dataclass
class TrainConfig:
    """Everything scripts/train.py reads."""

    model: TrainModelConfig = field(default_factory=TrainModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    flow: TrainFlowConfig = field(default_factory=TrainFlowConfig)
    trainable: List[str] = field(default_factory=lambda: list(DEFAULT_TRAINABLE))  # substrings of parameter names
    lora: LoraConfig = field(default_factory=LoraConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
