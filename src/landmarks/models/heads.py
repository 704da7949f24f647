"""Heads: DOLG (local + global branches, orthogonal fusion), GeM and average-pool baselines."""

from __future__ import annotations

from collections.abc import Mapping

import keras

from landmarks.config import Config
from landmarks.layers import DOLGHead, GeM
from landmarks.models.registry import register_head


@register_head("dolg")
def dolg_head(config: Config, features: Mapping[str, keras.KerasTensor]) -> keras.KerasTensor:
    """DOLG: local branch on stride 16, GeM global branch on stride 32, orthogonal fusion."""
    head = DOLGHead(
        local_dim=config.local_dim,
        embedding_dim=config.embedding_dim,
        dilations=config.dilations,
        gem_p=config.gem_p,
        dropout=config.dropout,
        name="dolg_head",
    )
    return head([features["stride16"], features["stride32"]])


@register_head("gem")
def gem_head(config: Config, features: Mapping[str, keras.KerasTensor]) -> keras.KerasTensor:
    """Global-only ablation: GeM on the stride-32 map, dropout, Dense to the embedding."""
    pooled = GeM(config.gem_p, name="gem")(features["stride32"])
    return _neck(config, pooled)


@register_head("avg")
def average_head(config: Config, features: Mapping[str, keras.KerasTensor]) -> keras.KerasTensor:
    """Backbone-only baseline: global average pooling, dropout, Dense to the embedding."""
    pooled = keras.layers.GlobalAveragePooling2D(name="average_pool")(features["stride32"])
    return _neck(config, pooled)


def _neck(config: Config, pooled: keras.KerasTensor) -> keras.KerasTensor:
    x = keras.layers.Dropout(config.dropout, name="neck_dropout")(pooled)
    return keras.layers.Dense(config.embedding_dim, name="neck")(x)
