"""Keras 3 layers of the landmarks model; each is serialisable under the `landmarks>` package."""

from __future__ import annotations

from landmarks.layers.arcface import SubCenterArcFace, dynamic_margins
from landmarks.layers.dolg import (
    DOLGHead,
    LocalBranch,
    MultiAtrous,
    OrthogonalFusion,
    SpatialAttention2D,
)
from landmarks.layers.gem import GeM

__all__ = [
    "DOLGHead",
    "GeM",
    "LocalBranch",
    "MultiAtrous",
    "OrthogonalFusion",
    "SpatialAttention2D",
    "SubCenterArcFace",
    "dynamic_margins",
]
