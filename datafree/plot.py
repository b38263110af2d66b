"""Scatter plots with error bars, drawn with Pillow alone (no plotting library to install).

The benchmark's figure is the one the data-free literature compares methods with: test accuracy
against wall-clock, one point per method, one panel per teacher/student pair, with the teacher's
accuracy as a dashed reference line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

# Twelve colours that stay distinct from one another (and in greyscale print, mostly).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939")
X_LABEL, Y_LABEL = "wall-clock (s)", "test accuracy (%)"


@dataclass
class Point:
    label: str  # the legend entry (a method)
    x: float
    y: float
    y_err: float = 0.0  # half-length of the error bar (0: none)
    marker: str = "circle"  # circle or square


@dataclass
class Panel:
    title: str
    points: list[Point]
    reference: tuple[str, float] | None = None  # a dashed horizontal line and its label (the teacher)


@dataclass
class Style:
    panel_size: tuple[int, int] = (620, 380)  # plot area of one panel, pixels
    margin: tuple[int, int, int, int] = (78, 44, 230, 58)  # left, top, right (legend), bottom
    font_size: int = 14


def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # a scalable font bundled with Pillow >= 10.1
    except TypeError:
        return ImageFont.load_default()


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 × 10^k apart) covering [low, high]."""
    if not high > low:
        high = low + 1.0
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(low / step) * step
    ticks = []
    value = start
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def tick_text(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f}"


def colors_for(panels: list[Panel]) -> dict[str, str]:
    """One colour per label, the same in every panel: the palette in order of first appearance."""
    colors: dict[str, str] = {}
    for panel in panels:
        for point in panel.points:
            if point.label not in colors:
                colors[point.label] = PALETTE[len(colors) % len(PALETTE)]
    return colors


def draw_marker(draw: ImageDraw.ImageDraw, x: float, y: float, kind: str, color: str, r: int = 6) -> None:
    if kind == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=color, outline="black")
    else:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color, outline="black")


def dashed_line(draw: ImageDraw.ImageDraw, x0: float, x1: float, y: float, color: str, dash: int = 8) -> None:
    x = x0
    while x < x1:
        draw.line([(x, y), (min(x + dash, x1), y)], fill=color, width=2)
        x += 2 * dash


def vertical_text(text: str, fnt: ImageFont.ImageFont, fill: str = "black") -> Image.Image:
    left, top, right, bottom = fnt.getbbox(text)
    strip = Image.new("RGBA", (right - left + 4, bottom - top + 4), (255, 255, 255, 0))
    ImageDraw.Draw(strip).text((2 - left, 2 - top), text, font=fnt, fill=fill)
    return strip.rotate(90, expand=True)


def printable(text: str) -> str:
    """Pillow's bundled font has no arrows."""
    return text.replace("→", "->").replace("×", "x")


def draw_panel(image: Image.Image, origin: tuple[int, int], panel: Panel, colors: dict[str, str], style: Style) -> None:
    draw = ImageDraw.Draw(image)
    fnt, small = font(style.font_size), font(style.font_size - 2)
    left, top, _, _ = style.margin
    width, height = style.panel_size
    x0, y0 = origin[0] + left, origin[1] + top  # top-left corner of the plot area
    x1, y1 = x0 + width, y0 + height

    # Data ranges: x from 0 (time is a ratio scale), y around the points, their bars and the reference.
    xs = [p.x for p in panel.points] or [1.0]
    ys = [v for p in panel.points for v in (p.y - p.y_err, p.y + p.y_err)]
    if panel.reference is not None:
        ys.append(panel.reference[1])
    ys = ys or [0.0, 100.0]
    x_ticks = nice_ticks(0.0, max(xs) * 1.08 or 1.0)
    pad = 0.08 * (max(ys) - min(ys)) + 0.5
    low, high = min(ys) - pad, max(ys) + pad
    if min(ys) >= 0 and max(ys) <= 100:  # percentages: no axis beyond what accuracy can be
        low, high = max(low, 0.0), min(high, 100.0)
    y_ticks = nice_ticks(low, high)
    to_px = lambda x, y: (x0 + (x - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * width,  # noqa: E731
                          y1 - (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * height)

    # Grid, axes, ticks and their labels.
    for tx in x_ticks:
        px = to_px(tx, y_ticks[0])[0]
        draw.line([(px, y0), (px, y1)], fill="#e6e6e6")
        draw.line([(px, y1), (px, y1 + 5)], fill="black")
        text = tick_text(tx, x_ticks[1] - x_ticks[0])
        draw.text((px, y1 + 8), text, font=small, fill="black", anchor="ma")
    for ty in y_ticks:
        py = to_px(x_ticks[0], ty)[1]
        draw.line([(x0, py), (x1, py)], fill="#e6e6e6")
        draw.line([(x0 - 5, py), (x0, py)], fill="black")
        draw.text((x0 - 8, py), tick_text(ty, y_ticks[1] - y_ticks[0]), font=small, fill="black", anchor="rm")
    draw.rectangle([x0, y0, x1, y1], outline="black")
    draw.text(((x0 + x1) / 2, origin[1] + 12), printable(panel.title), font=font(style.font_size + 1), fill="black", anchor="ma")
    draw.text(((x0 + x1) / 2, y1 + 30), X_LABEL, font=fnt, fill="black", anchor="ma")
    label = vertical_text(Y_LABEL, fnt)
    image.paste(label, (origin[0] + 8, int((y0 + y1) / 2 - label.height / 2)), label)

    # The reference line, then error bars and markers.
    if panel.reference is not None:
        name, value = panel.reference
        py = to_px(0, value)[1]
        dashed_line(draw, x0, x1, py, "#444444")
        draw.text((x1 - 6, py - 4), f"{name} {value:.2f}", font=small, fill="#444444", anchor="rd")
    for p in panel.points:
        px, py = to_px(p.x, p.y)
        color = colors[p.label]
        if p.y_err > 0:
            top_px, bottom_px = (min(max(to_px(p.x, v)[1], y0), y1) for v in (p.y + p.y_err, p.y - p.y_err))
            draw.line([(px, top_px), (px, bottom_px)], fill=color, width=2)
            draw.line([(px - 5, top_px), (px + 5, top_px)], fill=color, width=2)
            draw.line([(px - 5, bottom_px), (px + 5, bottom_px)], fill=color, width=2)
        draw_marker(draw, px, py, p.marker, color)

    # Legend to the right of the plot area: one entry per point, in the panel's order.
    lx, ly = x1 + 18, y0 + 4
    for p in panel.points:
        draw_marker(draw, lx + 6, ly + 8, p.marker, colors[p.label], r=5)
        draw.text((lx + 18, ly + 8), printable(p.label), font=small, fill="black", anchor="lm")
        ly += 22


def scatter_panels(panels: list[Panel]) -> Image.Image:
    """Panels stacked vertically in one RGB image; empty list → a one-line 'no results' image."""
    style = Style()
    left, top, right, bottom = style.margin
    width, height = style.panel_size
    cell_w, cell_h = left + width + right, top + height + bottom
    if not panels:
        image = Image.new("RGB", (cell_w, 80), "white")
        ImageDraw.Draw(image).text((20, 30), "no finished runs yet", font=font(style.font_size), fill="black")
        return image
    image = Image.new("RGB", (cell_w, cell_h * len(panels)), "white")
    colors = colors_for(panels)
    for i, panel in enumerate(panels):
        draw_panel(image, (0, i * cell_h), panel, colors, style)
    return image
