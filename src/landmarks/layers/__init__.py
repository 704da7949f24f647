"""Keras 3 layers of the landmarks model; each is serialisable under the `landmarks>` package."""

from __future__ import annotations

from landmarks.layers.arcface import SubCenterArcFace, dynamic_margins
from landmarks.layers.depthwise import DepthwiseConv2D
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
    "DepthwiseConv2D",
    "GeM",
    "LocalBranch",
    "MultiAtrous",
    "OrthogonalFusion",
    "SpatialAttention2D",
    "SubCenterArcFace",
    "dynamic_margins",
]

# FBSD (arXiv 2103.02782) and Conformer (arXiv 2105.03889) layers.
from landmarks.layers.conformer import (  # noqa: E402
    ClassToken,
    ConvBottleneck,
    ConvTransBlock,
    FCUDown,
    FCUUp,
    TransformerBlock,
)
from landmarks.layers.fbsd import FBSM, FDM, FBSDHead, TopKPool  # noqa: E402

__all__ += [
    "FBSM",
    "FDM",
    "ClassToken",
    "ConvBottleneck",
    "ConvTransBlock",
    "FBSDHead",
    "FCUDown",
    "FCUUp",
    "TopKPool",
    "TransformerBlock",
]
