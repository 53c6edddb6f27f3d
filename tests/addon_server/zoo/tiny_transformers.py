"""Tiny random transformers models, saved the way a real checkpoint folder is.

Each builder writes what ``save_pretrained`` writes for the real model family (config, weights,
image processor, tokenizer) with one or two layers and hidden sizes of 8–32, seeded, so a
loader reads them exactly as it would read ``depth-anything-v2-small`` or ``fashion-clip``. Their
outputs are real inference of meaningless weights. The tokenizer is a byte-pair model trained
here on a few sentences (no vocabulary download).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

CORPUS = (
    "a photo of a person wearing a t-shirt shirt hoodie jacket coat dress vest uniform",
    "jeans trousers shorts skirt no hat cap hood up helmet beanie high-visibility",
    "walking running standing still loitering climbing a fence breaking into a car window",
    "fighting falling down delivering a package carrying a box person street dog cat",
)
SPECIAL = ("<pad>", "<unk>", "<s>", "</s>")
TEXT = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "max_position_embeddings": 16,
    "pad_token_id": 0,
    "bos_token_id": 2,
    "eos_token_id": 3,
}
VISION = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}
CLIP_DIMENSION = 24
CLOTHES_LABELS = (
    "Background", "Hat", "Hair", "Sunglasses", "Upper-clothes", "Skirt", "Pants", "Dress", "Belt",
    "Left-shoe", "Right-shoe", "Face", "Left-leg", "Right-leg", "Left-arm", "Right-arm", "Bag",
    "Scarf",
)  # fmt: skip
"""The label set of the segformer_b2_clothes checkpoint the registry row names."""


def _seed() -> None:
    import torch

    torch.manual_seed(0)


def _bpe(special: Sequence[str]) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=120, special_tokens=list(special))
    )
    return tok


def tokenizer(folder: Path) -> Any:
    """A fast BPE tokenizer that wraps every text in ``<s> … </s>`` (CLIP's text pooling
    reads the end token)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = _bpe(SPECIAL)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
        eos_token="</s>", model_max_length=16,
    )  # fmt: skip
    fast.save_pretrained(folder)
    return fast


def clip(folder: Path, *, siglip: bool = False) -> None:
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )

    _seed()
    text = {**TEXT, "vocab_size": len(tokenizer(folder))}
    if siglip:
        SiglipModel(SiglipConfig(text_config=text, vision_config=VISION)).save_pretrained(folder)
        SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
        return
    config = CLIPConfig(text_config=text, vision_config=VISION, projection_dim=CLIP_DIMENSION)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)


def xclip(folder: Path, frames: int) -> None:
    from transformers import VideoMAEImageProcessor, XCLIPConfig, XCLIPModel

    _seed()
    vision = {
        **VISION, "num_frames": frames, "mit_hidden_size": 32, "mit_intermediate_size": 37,
        "mit_num_hidden_layers": 1, "mit_num_attention_heads": 2,
    }  # fmt: skip
    config = XCLIPConfig(
        text_config={**TEXT, "vocab_size": len(tokenizer(folder))},
        vision_config=vision,
        projection_dim=32,  # X-CLIP's video transformer works at the projection width
        prompt_layers=1,
        prompt_num_attention_heads=2,
    )
    XCLIPModel(config).save_pretrained(folder)
    VideoMAEImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)


def classifier(folder: Path, labels: Sequence[str]) -> None:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    _seed()
    config = ViTConfig(
        **VISION, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


def segformer(folder: Path) -> None:
    from transformers import (
        SegformerConfig,
        SegformerForSemanticSegmentation,
        SegformerImageProcessor,
    )

    _seed()
    config = SegformerConfig(
        num_encoder_blocks=1, depths=[1], sr_ratios=[1], hidden_sizes=[16], patch_sizes=[7],
        strides=[4], num_attention_heads=[1], mlp_ratios=[2], decoder_hidden_size=16,
        id2label=dict(enumerate(CLOTHES_LABELS)),
        label2id={n: i for i, n in enumerate(CLOTHES_LABELS)},
    )  # fmt: skip
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)


def vitpose(folder: Path) -> None:
    from transformers import (
        VitPoseBackboneConfig,
        VitPoseConfig,
        VitPoseForPoseEstimation,
        VitPoseImageProcessor,
    )

    _seed()
    backbone = VitPoseBackboneConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        image_size=[64, 48], patch_size=[16, 16], out_indices=[2],
    )  # fmt: skip
    config = VitPoseConfig(backbone_config=backbone, num_labels=17)  # COCO keypoints
    VitPoseForPoseEstimation(config).save_pretrained(folder)
    VitPoseImageProcessor(size={"height": 64, "width": 48}).save_pretrained(folder)


def depth_anything(folder: Path) -> None:
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    _seed()
    backbone = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        image_size=56, patch_size=14, out_indices=[1, 2], reshape_hidden_states=False,
    )  # fmt: skip
    config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[16, 32],
        fusion_hidden_size=16, head_hidden_size=16, reassemble_factors=[2, 1],
    )  # fmt: skip
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(
        size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14
    ).save_pretrained(folder)


def florence2(folder: Path) -> None:
    """The transformers-native Florence-2 layout (florence-community/Florence-2-base)."""
    from transformers import (
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
        PreTrainedTokenizerFast,
    )

    _seed()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=_bpe(("<s>", "<pad>", "</s>", "<unk>", "<image>")),
        bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"}, model_max_length=64,
    )  # fmt: skip
    image = CLIPImageProcessor(size={"height": 64, "width": 64}, do_center_crop=False)
    image.image_seq_length = 5  # 64 px / stride 32 = 2×2 patches, plus the pooled token
    Florence2Processor(image_processor=image, tokenizer=fast).save_pretrained(folder)
    text = {
        "vocab_size": len(fast), "d_model": 32, "encoder_layers": 1, "decoder_layers": 1,
        "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 37,
        "decoder_ffn_dim": 37, "max_position_embeddings": 64, "bos_token_id": 0,
        "pad_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 2,
        "forced_eos_token_id": 2,
    }  # fmt: skip
    vision = {
        "depths": [1, 1, 1, 1], "embed_dim": [8, 8, 16, 16], "num_heads": [1, 1, 2, 2],
        "num_groups": [1, 1, 2, 2], "window_size": 2, "projection_dim": 32,
        "drop_path_rate": 0.0,
    }  # fmt: skip
    config = Florence2Config(
        text_config=text, vision_config=vision, image_token_id=fast.image_token_id
    )
    Florence2ForConditionalGeneration(config).save_pretrained(folder)
