"""A tiny randomly initialised SAM 2 video model + processor, saved in the hub layout (for offline tests and demos)."""
from __future__ import annotations

from pathlib import Path

import torch

TINY_SIZE = 128  # model input side; the real models use 1024


def save_tiny_sam2(folder: str | Path, seed: int = 0) -> Path:
    """Build a ~1 M parameter SAM 2 (the real architecture, tiny widths) and save model + processor into `folder`.

    The widths keep SAM 2's fixed ratios: memory features are 64 channels (hard-wired in its memory
    attention) and the object pointer is split into hidden/64 tokens, so hidden is a multiple of 64 above it.
    """
    from transformers import Sam2HieraDetConfig, Sam2VideoConfig, Sam2VideoModel, Sam2VideoProcessor, Sam2VisionConfig
    from transformers.models.sam2.image_processing_sam2 import Sam2ImageProcessor
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    s, hidden = TINY_SIZE, 128
    backbone = Sam2HieraDetConfig(
        hidden_size=16, image_size=[s, s], blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
        num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 4, 4, 4],
        global_attention_blocks=[3],  # a global block must not open a stage (its query pooling needs a window)
        window_positional_embedding_background_size=[2, 2],
    )
    f = s // 4  # the patch embedding's stride
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[128, 64, 32, 16],
                              backbone_feature_sizes=[[f, f], [f // 2, f // 2], [f // 4, f // 4]], fpn_hidden_size=hidden)
    config = Sam2VideoConfig(
        vision_config=vision, image_size=s,
        prompt_encoder_config=dict(hidden_size=hidden, image_size=s, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=hidden, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
        memory_attention_hidden_size=hidden, memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[s // 16, s // 16], memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=64, mask_downsampler_embed_dim=hidden, memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=64, num_maskmem=3,
    )
    torch.manual_seed(seed)
    model = Sam2VideoModel(config).eval()
    size = {"height": s, "width": s}
    processor = Sam2VideoProcessor(image_processor=Sam2ImageProcessor(size=size), video_processor=Sam2VideoVideoProcessor(size=size))
    out = Path(folder)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
