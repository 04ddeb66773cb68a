"""The HTML report renderer: structure, assets, escaping and figure hygiene, read as a browser would parse it."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ganlab.plugin.components import Figure, Image, Result, Table  # noqa: E402
from ganlab.report.data import FAILED, OK, SKIPPED, ComponentRun, ReportData  # noqa: E402
from ganlab.report.render import fmt_value, render_report, slugify  # noqa: E402

PAYLOAD = "<script>alert(1)</script>"

# --- a tiny DOM, enough to query what a reader would see ---------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: "Node | None" = None):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def iter(self, tag: str | None = None):
        for child in self.children:
            if isinstance(child, Node):
                if tag is None or child.tag == tag:
                    yield child
                yield from child.iter(tag)

    def by_id(self, id_: str) -> "Node | None":
        return next((n for n in self.iter() if n.attrs.get("id") == id_), None)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)


class _TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#document", {})

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Node(tag, dict(attrs), self.current))

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:  # ignore stray end tags
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse(path: Path) -> Node:
    builder = _TreeBuilder()
    builder.feed(path.read_text(encoding="utf-8"))
    builder.close()
    return builder.root


def table_rows(table: Node) -> list[list[str]]:
    return [[cell.text().strip() for cell in row.iter() if cell.tag in ("td", "th")] for row in table.iter("tr")]


# --- the report data used here and by test_browser.py -------------------------------------------

def make_report_data(*, across_epochs: dict | None = None, history: dict | None = None,
                     ok_name: str = "fid-lite") -> ReportData:
    """A hand-built report: one OK component with every kind of result, one FAILED, one SKIPPED."""
    gen = torch.Generator().manual_seed(0)
    steps = 50
    if history is None:
        history = {
            "loss_D": torch.rand(steps, generator=gen).add(0.5).tolist(),
            "loss_G": torch.rand(steps, generator=gen).mul(2).add(1).tolist(),
            "D_x": torch.rand(steps, generator=gen).tolist(),
            "D_G_z": torch.rand(steps, generator=gen).tolist(),
            "epoch_end_steps": [25, 50],
        }
    fig, ax = plt.subplots(figsize=(4, 3))  # a pyplot-managed figure, as a plugin would make one
    ax.plot([0, 1, 2], [2, 0, 1])
    ax.set_title("a plugin figure")
    gray = (np.arange(32 * 48, dtype=np.uint8).reshape(32, 48) * 5)[:, :, None].repeat(3, axis=2)
    ok = ComponentRun(
        name=ok_name, kind="evaluator", description=f"A small test evaluator {PAYLOAD}", plugin="tests.fake",
        status=OK, seconds=1.25, options={"samples": 1000},
        result=Result(
            metrics={"fid": 12.3456789, "count": 1000, PAYLOAD: 0.5},
            tables=[Table("per class", ["class", "score"], [["cat", 0.123456], [PAYLOAD, 7]])],
            figures=[Figure("the figure", fig)],
            images=[Image("tensor grid", torch.rand(3, 40, 40, generator=gen)), Image("uint8 array", gray)],
            text=[f"Some text {PAYLOAD}"], verdict="the fid-lite verdict",
        ))
    failed = ComponentRun(name="broken", kind="analysis", description="always raises", plugin="tests.fake",
                          status=FAILED, seconds=0.02, error="ValueError: boom")
    skipped = ComponentRun(name="needs-labels", kind="evaluator", description="needs labels", plugin="tests.fake",
                           status=SKIPPED, reason="needs a dataset with labels of 2 classes or more")
    return ReportData(
        title="ganlab report: test", checkpoint="runs/test/last.pt",
        config={"image_size": 32, "nz": 100, "ngf": 64, "ndf": 64, "channels": 3}, dataset="cifar10",
        versions={"ganlab": "0.1.0", "torch": torch.__version__, "python": "3.11.0"}, seed=0,
        date="2024-01-02T03:04:05", training={"epoch": 2, "step": steps, "options": {"lr": 0.0002}},
        history=history, samples=torch.rand(3, 66, 66, generator=gen), components=[ok, failed, skipped],
        across_epochs=across_epochs or {})


def section(dom: Node, name: str) -> Node:
    node = dom.by_id(f"component-{name}")
    assert node is not None and node.tag == "section", f"no section for {name}"
    return node


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Rendered once for the read-only checks below (rendering costs most of this file's time)."""
    before = plt.get_fignums()
    index = render_report(make_report_data(), tmp_path_factory.mktemp("render") / "report")
    return index, parse(index), before


def test_index_and_images_exist(report):
    index, dom, _ = report
    assert index == index.parent / "index.html" and index.is_file()
    srcs = [img.attrs.get("src") for img in dom.iter("img")]
    assert len(srcs) >= 5  # history, samples, one figure, two images
    for src in srcs:
        assert src.startswith("assets/") and src.endswith(".png"), src
        assert (index.parent / src).is_file(), src


def test_no_remote_references(report):
    index, dom, _ = report
    for node in dom.iter():
        for attr in ("src", "href"):
            value = node.attrs.get(attr) or ""
            assert not value.startswith(("http://", "https://", "//")), value
    assert not list(dom.iter("script")) and not list(dom.iter("link"))
    assert "http://" not in index.read_text() and "https://" not in index.read_text()


def test_header_history_and_summary(report):
    _, dom, _ = report
    text = dom.text()
    for expected in ("ganlab report: test", "runs/test/last.pt", "cifar10", "0.1.0", "2024-01-02T03:04:05"):
        assert expected in text
    assert dom.by_id("training").iter("img")
    lines = [li for li in dom.by_id("summary").iter("li") if li.attrs.get("class", "").startswith("status-")]
    assert [li.attrs["class"] for li in lines] == ["status-ok", "status-failed", "status-skipped"]
    assert [next(li.iter("a")).text() for li in lines] == ["fid-lite", "broken", "needs-labels"]
    assert "the fid-lite verdict" in lines[0].text() and "ValueError: boom" in lines[1].text()
    assert "needs a dataset with labels of 2 classes or more" in lines[2].text()


def test_the_summary_comes_first_with_problems_on_top(tmp_path):
    data = make_report_data()
    data.problems = ["the generator is broken: 5 of 10 values are NaN"]
    data.components[0].result.problems = ["recall is 0: the samples cover no training image"]
    html = render_report(data, tmp_path / "r").read_text()
    summary, problems = html.index('id="summary"'), html.index('id="problems"')
    assert summary < problems < html.index("<img") and problems < html.index('id="component-fid-lite"')
    dom = parse(tmp_path / "r" / "index.html")
    listed = [li.text().strip() for li in dom.by_id("problems").iter("li")]
    assert listed == ["the generator is broken: 5 of 10 values are NaN",
                      "fid-lite: recall is 0: the samples cover no training image"]
    assert "epoch 2" in " ".join(dom.by_id("summary").text().split())


def test_a_number_in_a_table_is_not_listed_again(tmp_path):
    data = make_report_data()
    data.components[0].result.metrics["cat_score"] = 0.123456  # the table's "cat" cell shows 0.1235
    dom = parse(render_report(data, tmp_path / "r"))
    metrics = next(t for t in section(dom, "fid-lite").iter("table") if "metrics" in t.attrs.get("class", ""))
    names = [r[0] for r in table_rows(metrics)[1:]]
    assert "cat_score" not in names and "fid" in names
    assert "1 more metric, shown in the tables below, is in metrics.json by name" in section(dom, "fid-lite").text()


def test_metrics_table_values(report):
    _, dom, _ = report
    metrics = next(t for t in section(dom, "fid-lite").iter("table") if "metrics" in t.attrs.get("class", ""))
    values = dict(r for r in table_rows(metrics) if len(r) == 2)
    assert values["fid"] == "12.35" and values["count"] == "1000" and values[PAYLOAD] == "0.5"


def test_failed_and_skipped_sections(report):
    _, dom, _ = report
    failed = section(dom, "broken")
    alert = next(n for n in failed.iter() if n.attrs.get("role") == "alert")
    assert "ValueError" in alert.text() and "boom" in alert.text()
    assert "needs a dataset with labels of 2 classes or more" in section(dom, "needs-labels").text()


def test_plugin_text_is_escaped(report):
    index, dom, _ = report
    assert not list(dom.iter("script"))
    ok = section(dom, "fid-lite")
    visible = [n.text() for n in ok.iter() if n.tag in ("p", "td")]
    assert sum(PAYLOAD in t for t in visible) >= 4  # description, metric name, table cell, text
    assert PAYLOAD not in index.read_text()


def test_hostile_component_name_stays_in_assets(tmp_path):
    out = tmp_path / "a" / "b" / "report"
    data = make_report_data(ok_name="../../evil")
    data.components[0].result.figures[0].title = "../../../figure"
    index = render_report(data, out)
    written = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert all(p == index or p.parent == out / "assets" for p in written), written
    dom = parse(index)
    assert any(n.attrs.get("id", "").startswith("component-") and "evil" in n.attrs["id"] for n in dom.iter("section"))
    assert "../../evil" in dom.text()


def test_across_epochs_only_when_given(tmp_path):
    without = parse(render_report(make_report_data(), tmp_path / "without"))
    assert without.by_id("across-epochs") is None and "Across epochs" not in without.text()
    series = {"fid": [(1, 40.0), (2, 30.5), (3, 25.25)], "inception score": [(1, 2.0), (2, 2.5), (3, 3.0)]}
    index = render_report(make_report_data(across_epochs=series), tmp_path / "with")
    node = parse(index).by_id("across-epochs")
    assert node is not None
    imgs = list(node.iter("img"))
    assert len(imgs) == 2 and all((index.parent / i.attrs["src"]).is_file() for i in imgs)
    assert "fid" in node.text() and "inception score" in node.text()


def test_figures_are_closed(report):
    _, _, before = report
    assert plt.get_fignums() == before


def test_broken_figure_is_reported_and_closed(tmp_path):
    before = plt.get_fignums()
    data = make_report_data()

    def refuse(*args, **kwargs):
        raise RuntimeError("cannot draw")

    data.components[0].result.figures[0].figure.savefig = refuse
    dom = parse(render_report(data, tmp_path / "r"))
    assert "RuntimeError: cannot draw" in section(dom, "fid-lite").text()
    assert plt.get_fignums() == before


def test_empty_history(tmp_path):
    dom = parse(render_report(make_report_data(history={}), tmp_path / "r"))
    assert "no training history in this checkpoint" in dom.by_id("training").text().lower()
    assert not list(dom.by_id("training").iter("img"))


def test_formatting():
    assert fmt_value(1000) == "1000" and fmt_value(np.int64(7)) == "7"
    assert fmt_value(0.123456) == "0.1235" and fmt_value(np.float32(2.5)) == "2.5"
    assert fmt_value(torch.tensor(1.0 / 3)) == "0.3333" and fmt_value(float("nan")) == "nan"
    assert fmt_value(True) == "True" and fmt_value("x") == "x"
    assert slugify("../../evil") == "evil" and slugify("..") == "item" and slugify("FID Lite!") == "fid-lite"
