"""Unit tests for shared.figures, the notebooks' diagram-drawing helpers (Agg backend)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.patches import Circle, FancyBboxPatch, Rectangle  # noqa: E402

import shared  # noqa: E402
from shared.figures import (  # noqa: E402
    draw_arrow,
    draw_box,
    draw_circle,
    draw_column,
    draw_note,
    draw_state_row,
)


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_a_box_adds_one_patch_with_its_text_at_the_given_place_and_colour(ax):
    patch, label = draw_box(ax, 1.0, 2.0, 4.0, 0.5, "hello", "#cfe2f3")
    assert list(ax.patches) == [patch] and list(ax.texts) == [label]
    assert isinstance(patch, FancyBboxPatch)
    assert (patch.get_x(), patch.get_y(), patch.get_width(), patch.get_height()) == (1, 2, 4, 0.5)
    assert patch.get_facecolor() == to_rgba("#cfe2f3")
    assert label.get_text() == "hello"
    assert label.get_position() == (3.0, 2.25)


def test_a_centred_box_is_centred_on_the_point(ax):
    patch, label = draw_box(ax, 3.0, 1.0, 4.6, 0.62, "x", "white", anchor="center")
    assert patch.get_x() == pytest.approx(0.7) and patch.get_y() == pytest.approx(0.69)
    assert label.get_position() == (3.0, 1.0)


def test_a_frame_box_writes_its_title_in_the_top_left_corner(ax):
    _, label = draw_box(ax, 0.0, 0.0, 10.0, 5.0, "title", "grey", text_at="top")
    assert label.get_position() == pytest.approx((0.2, 4.8))
    assert (label.get_ha(), label.get_va()) == ("left", "top")


@pytest.mark.parametrize(
    ("option", "value"), [("anchor", "middle"), ("text_at", "bottom")], ids=["anchor", "text_at"]
)
def test_a_box_rejects_an_unknown_placement(ax, option, value):
    with pytest.raises(ValueError, match=option):
        draw_box(ax, 0, 0, 1, 1, "x", "white", **{option: value})
    assert not ax.patches


def test_an_arrow_connects_the_given_points(ax):
    arrow = draw_arrow(ax, (1.0, 2.0), (3.0, 4.0), color="tab:blue", style="->")
    assert list(ax.texts) == [arrow]
    assert arrow.xyann == (1.0, 2.0) and arrow.xy == (3.0, 4.0)
    assert arrow.arrow_patch.get_edgecolor() == to_rgba("tab:blue")
    assert arrow.arrowprops["arrowstyle"] == "->"


def test_a_circle_holds_its_label(ax):
    patch, label = draw_circle(ax, 2.0, 3.0, 0.25, "+")
    assert isinstance(patch, Circle) and list(ax.patches) == [patch]
    assert patch.center == (2.0, 3.0) and patch.radius == 0.25
    assert label.get_text() == "+" and label.get_position() == (2.0, 3.0)


def test_a_column_stacks_one_node_per_step_joined_by_arrows(ax):
    steps = [("input", "#eeeeee"), ("layer", "#d9ead3"), ("+", None), ("output", "#eeeeee")]
    ys = [1.0, 2.0, 3.0, 4.0]
    nodes, arrows = draw_column(ax, steps, 3.0, ys, width=2.0, box_style={"edgecolor": "black"})
    assert [label.get_text() for _, label in nodes] == ["input", "layer", "+", "output"]
    assert isinstance(nodes[2][0], Circle)
    assert nodes[1][0].get_edgecolor() == to_rgba("black")
    assert [label.get_position() for _, label in nodes] == [(3.0, y) for y in ys]
    assert len(arrows) == 3
    assert arrows[0].xyann == (3.0, 1.31) and arrows[0].xy == (3.0, 1.69)


def test_a_column_needs_one_height_per_step(ax):
    with pytest.raises(ValueError, match="2 steps, 1 heights"):
        draw_column(ax, [("a", "white"), ("b", "white")], 0.0, [1.0], width=1.0)


def test_a_state_row_draws_a_box_per_word_and_an_arrow_between_neighbours(ax):
    boxes = draw_state_row(ax, ["le", "chat", "noir"], y=3.0, color="#fce5cd", label_y=3.7)
    assert len(boxes) == 3 and all(isinstance(box, Rectangle) for box in boxes)
    assert [box.get_xy() for box in boxes] == [pytest.approx((i - 0.3, 2.75)) for i in range(3)]
    assert boxes[0].get_facecolor() == to_rgba("#fce5cd")
    words = [t for t in ax.texts if t.get_text()]
    arrows = [t for t in ax.texts if not t.get_text()]
    assert [w.get_text() for w in words] == ["le", "chat", "noir"]
    assert [w.get_position() for w in words] == [(0, 3.7), (1, 3.7), (2, 3.7)]
    assert [(a.xyann, a.xy) for a in arrows] == [
        (pytest.approx((i - 0.7, 3.0)), pytest.approx((i - 0.3, 3.0))) for i in (1, 2)
    ]


def test_a_note_is_coloured_text_on_a_background(ax):
    note = draw_note(ax, 1.0, 1.5, "look here", color="crimson")
    assert list(ax.texts) == [note] and note.get_position() == (1.0, 1.5)
    assert note.get_color() == "crimson" and note.get_bbox_patch() is not None


def test_drawing_renders_and_the_helpers_are_offered_by_the_facade(ax):
    draw_box(ax, 0, 0, 1, 1, "box", "white")
    draw_arrow(ax, (0, 0), (1, 1))
    ax.figure.canvas.draw()
    pixels = np.asarray(ax.figure.canvas.buffer_rgba())
    assert (pixels[..., :3] < 128).any(), "nothing dark was drawn"
    assert shared.draw_box is draw_box and shared.facade_index()["draw_column"] == "shared.figures"
