"""Every string the renderer takes is escaped: a hostile payload in each one leaves no live tag in the page.

The page is parsed with ``html.parser`` as a browser would tokenise it; only the template's own tags and
attributes may appear, no ``<script>``, no ``on*`` handler, no image that is not one of the report's assets,
and each field's payload must show up as text (escaped in the source, so rendered, not executed).
"""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure as MplFigure

from ganlab.plugin.components import Figure, Image, Result, Table
from ganlab.report.data import FAILED, OK, SKIPPED, ComponentRun, ReportData
from ganlab.report.render import render_report

TEMPLATE = (Path(__file__).resolve().parents[1] / "ganlab" / "templates" / "report.html").read_text()
TEMPLATE_TAGS = set(re.findall(r"<([a-z][a-z0-9]*)", TEMPLATE))
TEMPLATE_ATTRIBUTES = set(re.findall(r"\s([a-z-]+)=\"", TEMPLATE))


def payload(field: str) -> str:
    """Lowercase (the template capitalises training keys), with a tag, a handler and an attribute break-out."""
    return (f'<script>alert("{field}")</script><img src=x onerror=alert("{field}")>'
            f'" onload="alert(\'{field}\')" x=\'<b>{field}</b>')


class _Refuses:
    """A figure or image that cannot be written; its error message is the payload."""

    def __init__(self, field):
        self.field = field

    def savefig(self, *args, **kwargs):
        raise RuntimeError(payload(self.field))

    def detach(self):
        raise ValueError(payload(self.field))


def hostile_report() -> tuple[ReportData, list[str]]:
    """A report with the payload in every string the renderer takes; returns it and the fields' names."""
    used: list[str] = []

    def p(field):
        used.append(field)
        return payload(field)

    fig = MplFigure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    ok = ComponentRun(
        name=p("ok-name"), kind=p("ok-kind"), description=p("description"),
        plugin=f"{p('plugin')} ({p('distribution')})", status=OK, seconds=0.5,
        options={p("option-key"): p("option-value"), "steps": 3},
        result=Result(
            metrics={p("metric-name"): 0.25},
            tables=[Table(p("table-title"), [p("column"), "n"], [[p("cell"), 1], [2.5, p("second-cell")]])],
            figures=[Figure(p("figure-title"), fig), Figure(p("broken-figure-title"), _Refuses("figure-error"))],
            images=[Image(p("image-title"), torch.rand(3, 8, 8)),
                    Image(p("broken-image-title"), _Refuses("image-error"))],
            text=[p("text"), p("second-text")]))
    used += ["figure-error", "image-error"]
    failed = ComponentRun(name=p("failed-name"), kind="analysis", description="raises", plugin="tests",
                          status=FAILED, error=f"ValueError: {p('error-message')}", traceback=p("traceback"))
    untyped = ComponentRun(name="untyped", kind="analysis", description="raises", plugin="tests", status=FAILED,
                           error=p("untyped-error"))
    skipped = ComponentRun(name=p("skipped-name"), kind="evaluator", description="skips", plugin="tests",
                           status=SKIPPED, reason=p("skip-reason"))
    data = ReportData(
        title=p("title"), checkpoint=p("checkpoint-path"), config={p("config-key"): p("config-value"), "nz": 8},
        dataset=p("dataset"), versions={"ganlab": p("ganlab-version"), p("version-name"): p("version")}, seed=0,
        date=p("date"), training={"epoch": 2, p("training-key"): p("training-value"),
                                  "options": {p("training-option-key"): p("training-option-value")}},
        history={"loss_D": [1.0, 0.5], "loss_G": [1.0, 2.0], "D_x": [0.5, 0.6], "D_G_z": [0.4, 0.3]},
        samples=torch.rand(3, 10, 10), components=[ok, failed, untyped, skipped],
        across_epochs={p("series-name"): [(1, 0.5), (2, 0.25)]},
        problems=[p("problem"), f"plugin {p('failed-plugin')} ({p('failed-distribution')}) failed"])
    return data, used


class Tags(HTMLParser):
    """Every tag and attribute a browser would build from the page, and the text it would show."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.other: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self.text.extend(v for _, v in attrs if v)  # alt text is shown too

    def handle_data(self, data):
        self.text.append(data)

    def handle_comment(self, data):
        self.other.append(f"comment {data}")

    def handle_pi(self, data):
        self.other.append(f"processing instruction {data}")

    def unknown_decl(self, data):
        self.other.append(f"declaration {data}")


@pytest.fixture(scope="module")
def hostile_page(tmp_path_factory):
    data, fields = hostile_report()
    index = render_report(data, tmp_path_factory.mktemp("hostile") / "report")
    parser = Tags()
    parser.feed(index.read_text(encoding="utf-8"))
    parser.close()
    return index, parser, fields


def test_only_the_templates_tags_and_attributes(hostile_page):
    index, parser, _ = hostile_page
    tags = {tag for tag, _ in parser.tags}
    assert "script" not in tags and tags <= TEMPLATE_TAGS, tags - TEMPLATE_TAGS
    attributes = {name for _, attrs in parser.tags for name in attrs}
    assert not [a for a in attributes if a.startswith("on")], attributes
    assert attributes <= TEMPLATE_ATTRIBUTES, attributes - TEMPLATE_ATTRIBUTES
    assert not parser.other, parser.other
    # every image is one of the report's own files: history, samples, the one good figure and image, the series
    sources = [attrs.get("src") for tag, attrs in parser.tags if tag == "img"]
    assert len(sources) == 5 and all(s.startswith("assets/") and (index.parent / s).is_file() for s in sources)
    assert all(attrs.get("href", "#").startswith("#") for _, attrs in parser.tags)


def test_every_field_is_shown_as_text(hostile_page):
    index, parser, fields = hostile_page
    text = "".join(parser.text)
    source = index.read_text(encoding="utf-8")
    assert len(fields) == len(set(fields)) >= 40
    missing = [f for f in fields if payload(f) not in text]
    assert not missing, f"fields not shown (or not intact): {missing}"
    for field in fields:
        assert payload(field) not in source  # present only in escaped form
        assert f'&lt;script&gt;alert(&#34;{field}&#34;)&lt;/script&gt;' in source, field
