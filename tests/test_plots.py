"""Training curves and retrieval grids are real PNGs; correct/wrong neighbours get their colours."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from landmarks.errors import DataError
from landmarks.plots import plot_history, plot_retrieval_grid


def _count_colour(png, hex_colour, tolerance=30):
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    target = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - target).max(axis=-1) <= tolerance).sum())


def test_history_with_and_without_validation_gap(tmp_path):
    with_gap = tmp_path / "history.csv"
    with_gap.write_text("epoch,loss,learning_rate,val_gap\n1,5.0,0.001,0.1\n2,4.0,0.0005,0.3\n")
    without = tmp_path / "history2.csv"
    without.write_text("epoch,loss,learning_rate\n1,5.0,0.001\n2,4.0,0.0005\n")
    plot_history(str(with_gap), str(tmp_path / "a.png"))
    plot_history(str(without), str(tmp_path / "b.png"))
    wide, narrow = Image.open(tmp_path / "a.png"), Image.open(tmp_path / "b.png")
    assert wide.format == narrow.format == "PNG"
    assert wide.size[0] > narrow.size[0] * 1.3  # three panels against two


@pytest.mark.parametrize(
    "text, message",
    [
        ("epoch,loss\n1,2\n", "missing column.*learning_rate"),
        ("epoch,loss,learning_rate\n", "no epochs"),
    ],
)
def test_history_errors(tmp_path, text, message):
    path = tmp_path / "history.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        plot_history(str(path), str(tmp_path / "out.png"))
    with pytest.raises(DataError, match="not found"):
        plot_history(str(tmp_path / "nope.csv"), str(tmp_path / "out.png"))


def test_retrieval_grid_marks_correct_green_and_wrong_red(tmp_path):
    grey = np.full((32, 32, 3), 128, np.uint8)
    photo = tmp_path / "q.jpg"
    Image.fromarray(grey).save(photo)
    out = tmp_path / "grid.png"
    plot_retrieval_grid(
        [str(photo), grey],
        [[grey, grey], [grey]],
        str(out),
        query_labels=[5, 6],
        neighbour_labels=[[5, 9], [6]],
        similarities=[[0.9, 0.5], [0.8]],
    )
    assert Image.open(out).format == "PNG"
    assert _count_colour(out, "#1a9850") > 100 and _count_colour(out, "#d73027") > 100
    all_correct = tmp_path / "right.png"
    plot_retrieval_grid(
        [grey], [[grey]], str(all_correct), query_labels=[1], neighbour_labels=[[1]]
    )
    assert _count_colour(all_correct, "#d73027") == 0


def test_retrieval_grid_errors(tmp_path):
    grey = np.zeros((8, 8, 3))
    with pytest.raises(DataError, match="2 queries but 1"):
        plot_retrieval_grid([grey, grey], [[grey]], str(tmp_path / "x.png"))
    with pytest.raises(DataError, match=r"\[H, W, 3\]"):
        plot_retrieval_grid([np.zeros((8, 8))], [[grey]], str(tmp_path / "x.png"))
    with pytest.raises(DataError, match="cannot read image"):
        plot_retrieval_grid([str(tmp_path / "none.jpg")], [[grey]], str(tmp_path / "x.png"))


def _boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_retrieval_grid_captions_overlap_neither_each_other_nor_the_images():
    from landmarks.plots import retrieval_grid_figure

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (h, w, 3)).astype(np.uint8) for h, w in ((60, 90), (90, 40))]
    long_name = "Navajo National Monument (Betatakin) and its cliff dwellings"
    figure = retrieval_grid_figure(
        images * 2,
        [images * 3] * 4,
        query_labels=[long_name, "Taj Mahal", long_name, "Great Wall"],
        neighbour_labels=[[long_name, "Taj Mahal", "x", "y", "z", "w"]] * 4,
        similarities=[[0.91, 0.5, 0.4, 0.3, 0.2, 0.1]] * 4,
        titles=["query: hit, first relevant #1"] * 4,
    )
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    captions = [axis.xaxis.label for axis in figure.axes if axis.xaxis.label.get_text()]
    assert len(captions) == 4 * 6
    assert all(caption.get_text().count("\n") <= 2 for caption in captions)  # 3 lines at most
    text_boxes = [caption.get_window_extent(renderer) for caption in captions]
    image_boxes = [
        image.get_window_extent(renderer) for axis in figure.axes for image in axis.images
    ]
    for i, box in enumerate(text_boxes):
        assert not any(_boxes_overlap(box, other) for other in text_boxes[i + 1 :])
        assert not any(_boxes_overlap(box, image) for image in image_boxes)
    import matplotlib.pyplot as plt

    plt.close(figure)
