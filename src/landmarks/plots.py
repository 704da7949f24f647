"""PNG figures: training curves and retrieval grids (matplotlib, Agg back end, written atomically)."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence

import numpy as np

from landmarks.errors import DataError

CORRECT_COLOUR = "#1a9850"
WRONG_COLOUR = "#d73027"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, out_png: str) -> None:
    from landmarks.io_utils import write_bytes_atomic

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(figure)
    write_bytes_atomic(out_png, buffer.getvalue())


def plot_history(history_csv: str, out_png: str) -> None:
    """Training curves from history.csv (columns epoch, loss, learning_rate, optional val_gap):
    loss, learning rate and, when present, validation GAP against the epoch."""
    import pandas as pd

    from landmarks.io_utils import read_text

    try:
        table = pd.read_csv(io.StringIO(read_text(history_csv)))
    except FileNotFoundError as error:
        raise DataError(f"history file not found: {history_csv}") from error
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(f"{history_csv}: not a CSV file ({error})") from error
    missing = [c for c in ("epoch", "loss", "learning_rate") if c not in table.columns]
    if missing:
        raise DataError(f"{history_csv}: missing column(s) {', '.join(missing)}")
    if table.empty:
        raise DataError(f"{history_csv}: no epochs recorded")
    panels = [("loss", "loss"), ("learning_rate", "learning rate")]
    if "val_gap" in table.columns and table["val_gap"].notna().any():
        panels.append(("val_gap", "validation GAP"))
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5))
    for axis, (column, title) in zip(np.atleast_1d(axes), panels, strict=True):
        values = pd.to_numeric(table[column], errors="coerce")
        axis.plot(table["epoch"], values, marker="o")
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if column == "learning_rate":
            axis.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    _save(figure, out_png)


def plot_retrieval_grid(
    query_images: Sequence, neighbour_images: Sequence[Sequence], out_png: str, **options
) -> None:
    """`retrieval_grid_figure(query_images, neighbour_images, **options)` saved to `out_png`."""
    _save(retrieval_grid_figure(query_images, neighbour_images, **options), out_png)


def retrieval_grid_figure(
    query_images: Sequence,
    neighbour_images: Sequence[Sequence],
    *,
    query_labels: Sequence | None = None,
    neighbour_labels: Sequence[Sequence] | None = None,
    similarities=None,
    max_neighbours: int = 5,
    titles: Sequence[str] | None = None,
    heading: str | None = None,
):
    """A matplotlib Figure with one row per query: the query image, then its top neighbours
    left to right.

    query_images: [Q] images (uint8/float arrays [H, W, 3] in [0, 255], or image file paths);
    neighbour_images: [Q][k] the same; query_labels [Q] / neighbour_labels [Q][k]: the landmark
    of each image (a name, or an integer id shown as "landmark <id>"), written under it; when
    both are given a neighbour is framed green when its label equals the query's (correct) and
    red otherwise (wrong). similarities [Q][k]: written beside each neighbour's rank. titles
    [Q]: the first caption line of each query (default "query"). heading: a line above all. Captions are wrapped to the
    image width (at most CAPTION_LINES lines) and the layout leaves room for them.
    """
    if len(query_images) == 0:
        raise DataError("retrieval grid: no queries")
    if len(neighbour_images) != len(query_images):
        raise DataError(
            f"retrieval grid: {len(query_images)} queries but {len(neighbour_images)} neighbour rows"
        )
    columns = 1 + min(max_neighbours, max(len(row) for row in neighbour_images))
    plt = _pyplot()
    figure, axes = plt.subplots(
        len(query_images),
        columns,
        figsize=(2.3 * columns, 2.9 * len(query_images)),
        squeeze=False,
        layout="constrained",
    )
    if heading:
        figure.suptitle(heading, fontsize=10)
    for row, query in enumerate(query_images):
        query_label = None if query_labels is None else query_labels[row]
        caption = titles[row] if titles is not None else "query"
        if query_label is not None:
            caption += "\n" + _label_text(query_label)
        _show(axes[row, 0], query, caption, "black")
        for column in range(1, columns):
            axis = axes[row, column]
            if column - 1 >= len(neighbour_images[row]):
                axis.axis("off")
                continue
            label = None if neighbour_labels is None else neighbour_labels[row][column - 1]
            caption = f"#{column}"
            if similarities is not None:
                caption += f"  cos {float(similarities[row][column - 1]):.3f}"
            colour = "grey"
            if label is not None:
                if query_label is not None:
                    correct = label == query_label
                    colour = CORRECT_COLOUR if correct else WRONG_COLOUR
                    caption += "  ✓" if correct else "  ✗"
                caption += "\n" + _label_text(label)
            _show(axis, neighbour_images[row][column - 1], caption, colour)
    return figure


CAPTION_WIDTH = 24  # characters per caption line (fits the 2.3-inch column at 8 pt)
CAPTION_LINES = 2  # label lines under an image; longer names end in "…"


def _label_text(label) -> str:
    text = f"landmark {label}" if isinstance(label, (int, np.integer)) else str(label)
    lines = textwrap.wrap(text, CAPTION_WIDTH, max_lines=CAPTION_LINES, placeholder=" …")
    return "\n".join(lines)


def _show(axis, image, caption: str, colour: str) -> None:
    axis.imshow(_load_image(image))
    axis.set_xlabel(caption, fontsize=8, color=colour if colour != "grey" else "black")
    axis.set_xticks([])
    axis.set_yticks([])
    for spine in axis.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(4 if colour not in ("grey", "black") else 1)


def _load_image(image) -> np.ndarray:
    """uint8 [H, W, 3] from an array in [0, 255] or an image file path."""
    if isinstance(image, str):
        from PIL import Image

        try:
            with Image.open(image) as opened:
                return np.asarray(opened.convert("RGB"))
        except (FileNotFoundError, OSError) as error:
            raise DataError(f"retrieval grid: cannot read image {image}: {error}") from error
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise DataError(f"retrieval grid: images must be [H, W, 3], got shape {array.shape}")
    return np.clip(array, 0, 255).astype(np.uint8)
