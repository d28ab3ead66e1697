"""The report's dependency-free line chart: valid SVG, one line per series, legend where asked."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from histosynth.report.svg import line_chart

SERIES = {"10% real": [(142, 0.925, 0.002), (284, 0.923, 0.003)], "100% real": [(1288, 0.930, 0.001)]}
NS = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("legend", ["top right", "bottom right"])
def test_line_chart_is_valid_svg_with_a_legend_in_the_asked_corner(legend: str) -> None:
    root = ET.fromstring(line_chart(SERIES, "tiles", "Dice", width=600, height=300, legend=legend))
    assert len(root.findall(f"{NS}polyline")) == len(SERIES)
    labels = {t.text: float(t.get("y")) for t in root.findall(f"{NS}text") if t.text in SERIES}
    assert set(labels) == set(SERIES)
    if legend == "top right":
        assert all(y < 150 for y in labels.values())
    else:
        assert all(y > 150 for y in labels.values())
        assert max(labels.values()) < 300 - 40  # above the x axis


def test_line_chart_without_points_says_so() -> None:
    assert line_chart({}, "tiles", "Dice") == "<p>(no data)</p>"
