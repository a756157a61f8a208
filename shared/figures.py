"""Drawing helpers for the notebooks' diagrams: boxes, arrows, labelled columns, notes.

Infrastructure, not teaching code: the chapters draw their architecture diagrams with
these few matplotlib primitives so that each figure cell holds only what it shows. Every
function draws on the matplotlib ``Axes`` it is given, in data coordinates, and returns
the artists it added, so a caller (or a test) can adjust or inspect them.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

__all__ = [
    "draw_arrow",
    "draw_box",
    "draw_circle",
    "draw_column",
    "draw_note",
    "draw_state_row",
]

Point = tuple[float, float]

# A white, borderless, slightly see-through background that keeps a note readable
# over the lines behind it.
_NOTE_BACKGROUND = {"boxstyle": "round", "fc": "white", "ec": "none", "alpha": 0.9}


def draw_box(
    ax,
    x: float,
    y: float,
    width: float,
    height: float,
    text: str,
    color,
    *,
    anchor: str = "lower left",
    text_at: str = "center",
    fontsize: float = 9,
    edgecolor="0.25",
    linewidth: float = 1.2,
    rounding: float = 0.15,
):
    """Draw a rounded box filled with ``color`` and labelled with ``text``.

    ``(x, y)`` is the box's lower-left corner (``anchor="lower left"``) or its centre
    (``anchor="center"``). The label sits in the middle (``text_at="center"``) or in the
    top-left corner (``text_at="top"``, for a box that frames other boxes).
    Returns ``(patch, label)``.
    """
    if anchor == "lower left":
        left, bottom, middle = x, y, (x + width / 2, y + height / 2)
    elif anchor == "center":
        left, bottom, middle = x - width / 2, y - height / 2, (x, y)
    else:
        raise ValueError(f"anchor must be 'lower left' or 'center', got {anchor!r}")
    if text_at not in ("center", "top"):
        raise ValueError(f"text_at must be 'center' or 'top', got {text_at!r}")
    patch = FancyBboxPatch(
        (left, bottom),
        width,
        height,
        boxstyle=f"round,pad=0.02,rounding_size={rounding}",
        facecolor=color,
        edgecolor=edgecolor,
        linewidth=linewidth,
    )
    ax.add_patch(patch)
    if text_at == "center":
        label = ax.text(*middle, text, ha="center", va="center", fontsize=fontsize)
    else:
        label = ax.text(
            left + 0.2, bottom + height - 0.2, text, ha="left", va="top", fontsize=fontsize
        )
    return patch, label


def draw_arrow(
    ax, start: Point, end: Point, *, color="0.2", linewidth: float = 1.4, style: str = "-|>"
):
    """Draw an arrow from point ``start`` to point ``end``; returns its annotation.

    ``style`` is a matplotlib arrow style: ``"-|>"`` (filled head) or ``"->"`` (open head).
    """
    return ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops={"arrowstyle": style, "color": color, "linewidth": linewidth},
    )


def draw_circle(ax, x: float, y: float, radius: float, text: str, *, fontsize: float = 12):
    """Draw a white circle centred on (x, y) with ``text`` inside (e.g. the "+" of a sum).

    Returns ``(patch, label)``.
    """
    patch = plt.Circle((x, y), radius, facecolor="white", edgecolor="black")
    ax.add_patch(patch)
    label = ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
    return patch, label


def draw_column(
    ax,
    steps: Sequence[tuple[str, object]],
    x: float,
    ys: Sequence[float],
    width: float,
    *,
    height: float = 0.62,
    box_style: dict | None = None,
    arrow_style: dict | None = None,
):
    """Stack the ``(label, color)`` steps at heights ``ys``, bottom to top, joined by arrows.

    Each step is a box of ``width`` x ``height`` centred on (x, y); a step whose color is
    None is drawn as a small circle instead (the "+" where a shortcut joins). ``box_style``
    and ``arrow_style`` are passed on to :func:`draw_box` and :func:`draw_arrow`.
    Returns the list of ``(patch, label)`` pairs and the list of arrows.
    """
    if len(steps) != len(ys):
        raise ValueError(f"need one height per step: {len(steps)} steps, {len(ys)} heights")
    nodes = []
    for (label, color), y in zip(steps, ys, strict=True):
        if color is None:
            nodes.append(draw_circle(ax, x, y, 0.25, label))
        else:
            nodes.append(
                draw_box(
                    ax, x, y, width, height, label, color, anchor="center", **(box_style or {})
                )
            )
    arrows = [
        draw_arrow(ax, (x, y0 + height / 2), (x, y1 - height / 2), **(arrow_style or {}))
        for y0, y1 in zip(ys[:-1], ys[1:], strict=True)
    ]
    return nodes, arrows


def draw_state_row(ax, words: Sequence[str], y: float, color, label_y: float):
    """One square box per word at height ``y``, each fed by an arrow from the one before.

    The words are written at height ``label_y``, one per box, at x = 0, 1, 2, ... (the
    hidden states of a recurrent network reading a sentence). Returns the boxes.
    """
    boxes = []
    for i, word in enumerate(words):
        ax.text(i, label_y, word, ha="center", va="center", fontsize=10)
        boxes.append(ax.add_patch(plt.Rectangle((i - 0.3, y - 0.25), 0.6, 0.5, fc=color, ec="k")))
        if i > 0:
            draw_arrow(ax, (i - 0.7, y), (i - 0.3, y), color="black", linewidth=1.0, style="->")
    return boxes


def draw_note(ax, x: float, y: float, text: str, *, color="crimson", fontsize: float = 10):
    """Write a coloured note centred on (x, y) over a white background; returns the text."""
    return ax.text(
        x, y, text, color=color, ha="center", va="center", fontsize=fontsize, bbox=_NOTE_BACKGROUND
    )
