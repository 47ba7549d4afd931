"""report.html in a real headless browser (Chromium): it loads without errors, every image decodes, and the
table's numbers are summary.json's. Skips only where no Chromium binary is installed (CI installs it)."""
import base64
import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from invscore.cli import main
from invscore.run.report import write_experiment_report

BROWSER = next((b for b in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if b), None)
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no chromium binary (apt-get install chromium)")


@pytest.fixture(scope="module")
def run(prior, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["inpaint", "--prior", prior, "--n", "3", "--samples", "2", "--steps", "2", "--quiet",
                 "--threads", "1", "--out", str(out)]) == 0
    return out


def _dom(page, tmp_path) -> str:
    """The page's DOM after its load event, as headless Chromium renders it from the file (no server)."""
    res = subprocess.run([BROWSER, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={tmp_path / 'p'}",
                          "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def _body(dom: str) -> dict:
    tag = re.search(r"<body([^>]*)>", dom).group(1)
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag))


@needs_browser
def test_run_report_loads_every_image_and_shows_the_summary_numbers(run, tmp_path):
    summary = json.loads((run / "summary.json").read_text())
    dom = _dom(run / "report.html", tmp_path)
    body = _body(dom)
    assert body["data-images"] == "ok" and body["data-errors"] == "0" and int(body["data-image-count"]) >= 1
    means = dict(re.findall(r"<tr class=\"metric\" data-key=\"(\w+)\">.*?data-value=\"([^\"]*)\"", dom))
    assert set(means) == {k for k, v in summary["metrics"].items()}  # every mean, nothing else
    for key, value in summary["metrics"].items():
        assert (float(means[key]) if means[key] else None) == value, key  # exact, not rounded
    shown = re.search(r'data-key="psnr">.*?<td data-value="[^"]*">([^<]*)<', dom).group(1)
    assert abs(float(shown) - summary["metrics"]["psnr"]) < 0.01  # and what a reader sees is that number
    for col in summary["grid_columns"]:
        assert html.escape(col.replace("A+y", "A⁺y")) in dom
    assert dom.count("<tr>") - 1 >= 6  # the per-image table: 3 images × 2 samples


@needs_browser
def test_a_broken_image_is_caught(run, tmp_path):
    page = (run / "report.html").read_text()
    good = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    bad = tmp_path / "bad.html"
    bad.write_text(page.replace(good, base64.b64encode(b"not a png").decode(), 1))
    assert _body(_dom(bad, tmp_path))["data-images"] == "broken"


def test_grid_png_has_a_label_strip_and_every_column(run):
    summary = json.loads((run / "summary.json").read_text())
    assert summary["grid_columns"] == ["measurement", "sample 0", "sample 1", "posterior mean", "std x4",
                                       "ground truth", "A+y baseline"]
    with Image.open(run / "grid.png") as im:
        g = torch.from_numpy(np.array(im.convert("L"))).float()
    scale, pad, tile = 2, 2, 32
    assert g.shape[1] == (pad + 7 * (tile + pad)) * scale  # seven columns
    strip = g.shape[0] - (pad + 3 * (tile + pad)) * scale  # three image rows below the labels
    assert strip > 8 and (g[:strip] < 128).any()  # dark text on the white strip


@needs_browser
def test_experiment_page_embeds_figures_and_tables(tmp_path):
    fig = tmp_path / "nfe.png"
    Image.new("RGB", (40, 20), (200, 30, 30)).save(fig)
    csv_path = tmp_path / "table.csv"
    csv_path.write_text("method,nfe,psnr\npigdm,20,24.5\ndps,100,22.25\n")
    md = tmp_path / "exp.md"
    md.write_text("# Quality vs NFE\n\nSome `text`.\n\n| method | psnr |\n|---|---|\n| pigdm | 24.5 |\n\n"
                  "![plot](nfe.png)\n")
    page = write_experiment_report(tmp_path / "exp.html", "experiment", markdown=md, figures=[fig], tables=[csv_path])
    assert "file:" not in page.read_text() and "http" not in page.read_text()
    dom = _dom(page, tmp_path)
    body = _body(dom)
    # the write-up shows the figure, so it is embedded there and not repeated below
    assert body["data-images"] == "ok" and body["data-errors"] == "0" and body["data-image-count"] == "1"
    assert "<td class=\"l\">pigdm</td>" in dom and 'data-value="22.25"' in dom and "<code>text</code>" in dom
