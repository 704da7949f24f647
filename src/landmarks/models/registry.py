"""The backbone and head registries: what `config.backbone` and `config.head` accept.

* `BACKBONES[name] = builder`, `builder(config) -> keras.Model`: raw image float32 [B,H,W,3] in
  [0,255] (input shape (None, None, 3)) -> dict of feature maps keyed "stride4" ... "stride32"
  (at least "stride16" and "stride32"). The model does its own preprocessing.
* `HEADS[name] = builder`, `builder(config, features) -> embedding | HeadOutput`.
* `BACKBONE_ADAPTERS[head_name] = adapter`, `adapter(config, backbone) -> backbone`: for a head
  that also rewires the backbone (FBSD).

The modules that fill them are imported by `landmarks.models`, so the registries are complete as
soon as the package is imported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras

from landmarks.config import Config

BackboneBuilder = Callable[[Config], keras.Model]


BACKBONES: dict[str, BackboneBuilder] = {}


HEADS: dict[str, Callable] = {}


BACKBONE_ADAPTERS: dict[str, Callable[[Config, keras.Model], keras.Model]] = {}


@dataclasses.dataclass
class HeadOutput:
    """What a head builder may return instead of a bare embedding tensor.

    embedding: symbolic [B, D], the retrieval descriptor (normalised by build_model).
    auxiliary: name -> symbolic [B, D_i] embeddings each trained with its own ArcFace classifier.
    """

    embedding: keras.KerasTensor
    auxiliary: dict[str, keras.KerasTensor] = dataclasses.field(default_factory=dict)


def register_backbone(name: str):
    def decorate(builder):
        BACKBONES[name] = builder
        return builder

    return decorate


def register_head(name: str):
    def decorate(builder):
        HEADS[name] = builder
        return builder

    return decorate
