"""Self-contained HTML pages to look at: ``report.html`` of a run directory, and an experiment's results page.

Everything a page shows is inside it (images as base64 ``data:`` URIs, the style inline, no scripts or fonts
fetched), so it opens offline, from an e-mail attachment or a copied folder. Numbers appear rounded for
reading; each metric cell also carries the exact value in ``data-value`` (the float's repr, as
``summary.json`` has it). A small inline script sets ``<body data-images="ok">`` once every image has
decoded (``naturalWidth > 0``; ``"broken"`` otherwise) and ``data-errors`` to the number of script or resource
errors, which the browser test (tests/test_report_html.py) reads.
"""
from __future__ import annotations

import base64
import csv
import html
import json
import re
from pathlib import Path

from .. import io

__all__ = ["write_run_report", "write_experiment_report", "markdown_to_html"]

_STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}img{image-rendering:pixelated;max-width:100%}
figure{margin:1em 0}figcaption{color:#555}pre{background:#f7f7f7;padding:.6em;overflow:auto}
.cols{display:flex;gap:.4em;flex-wrap:wrap}.cols span{background:#eef;padding:0 .4em;border-radius:3px}"""

_SCRIPT = """<script>
var reportErrors = 0;  // script errors and failed resources (captured: resource errors do not bubble)
window.addEventListener('error', function () { reportErrors += 1; }, true);
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-images', ok ? 'ok' : 'broken');
  document.body.setAttribute('data-image-count', String(imgs.length));
  document.body.setAttribute('data-errors', String(reportErrors));
});
</script>"""

#: summary keys of an inverse run's means, in the order and with the names the table shows
_METRICS = (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("lpips", "LPIPS (alex)"), ("baseline_psnr", "A⁺y PSNR (dB)"),
            ("baseline_ssim", "A⁺y SSIM"))
_MAX_ROWS = 200  # per-image rows shown; metrics.csv has them all


def _esc(v) -> str:
    return html.escape(str(v), quote=True)


def _img(path: Path, alt: str) -> str:
    """An ``<img>`` with the file embedded as a data URI (PNG, JPEG, SVG or GIF)."""
    kind = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".svg": "svg+xml", ".gif": "gif"}[path.suffix.lower()]
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/{kind};base64,{data}">'


def _num(v) -> str:
    """A number cell: rounded text, the exact value in ``data-value``; empty values show as n/a."""
    if v is None or v == "":
        return '<td data-value="">n/a</td>'
    try:
        f = float(v)
    except (TypeError, ValueError):
        return f'<td class="l">{_esc(v)}</td>'
    text = f"{f:.4g}" if abs(f) < 1e4 else f"{f:.0f}"
    return f'<td data-value="{_esc(v if isinstance(v, str) else repr(f))}">{text}</td>'


def _table(header: list[str], rows: list[list], numeric_from: int = 1, cls: str = "") -> str:
    head = "".join(f'<th class="{"l" if i < numeric_from else ""}">{_esc(h)}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="l">{_esc(c)}</td>' if i < numeric_from else _num(c)
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f"<style>{_STYLE}</style>{_SCRIPT}</head><body><h1>{_esc(title)}</h1>{body}</body></html>\n")


def _facts(s: dict) -> str:
    keys = [("prior", (s.get("prior") or {}).get("name")), ("images", s.get("n_images")),
            ("samples per image", s.get("samples_per_image")), ("method", s.get("method") or s.get("sampler")),
            ("steps", s.get("steps")), ("NFE", s.get("nfe")), ("backward passes", s.get("backward_passes")),
            ("sampling seconds", s.get("sampling_seconds")), ("wall seconds", s.get("wall_seconds")),
            ("device", s.get("device")), ("threads", s.get("threads")), ("processes", s.get("processes")),
            ("class", s.get("class")), ("class accuracy", s.get("class_accuracy")), ("complete", s.get("complete"))]
    rows = "".join(f'<tr><th class="l">{_esc(k)}</th>' + (_num(v) if isinstance(v, float) else
                                                          f'<td class="l">{_esc(v)}</td>') + "</tr>"
                   for k, v in keys if v is not None)
    return f'<table class="facts">{rows}</table>'


def _grid(run_dir: Path, s: dict) -> str:
    if not (run_dir / "grid.png").is_file():
        return ""
    cols = s.get("grid_columns")
    labels = ("<div class='cols'>" + "".join(f"<span>{_esc(c.replace('A+y', 'A⁺y'))}</span>" for c in cols)
              + "</div>") if cols else ""
    caption = ("one row per image (the first rows only); the std column shows the per-pixel standard deviation "
               "of the posterior samples, scaled as its label says" if cols else "samples of the prior")
    figure = f"<figure>{_img(run_dir / 'grid.png', 'grid')}<figcaption>{caption}</figcaption></figure>"
    return f"<h2>Grid</h2>{labels}{figure}"


def _metrics(run_dir: Path, s: dict) -> str:
    m, pm = s.get("metrics") or {}, s.get("metrics_posterior_mean")
    out = ""
    if m:  # each mean's row is named (data-key) so a reader of the DOM can match it to summary.json
        rows = "".join(f"<tr class='metric' data-key='{key}'><td class='l'>{_esc(label)}</td>{_num(m.get(key))}"
                       + ((_num(pm[key]) if key in pm else "<td></td>") if pm is not None else "") + "</tr>"
                       for key, label in _METRICS if key in m)
        head = "<th>mean</th>" + ("<th>posterior mean of the samples</th>" if pm is not None else "")
        note = (f"; right: the metrics of each image's mean of its {s.get('samples_per_image')} samples "
                "(a posterior-mean estimate: higher PSNR, blurrier)") if pm is not None else ""
        out += (f"<h2>Metrics</h2><p>means over every image and sample{note}</p><table class='means'>"
                f"<tr><th class='l'>metric</th>{head}</tr>{rows}</table>")
    path = run_dir / "metrics.csv"
    if path.is_file():
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if len(rows) > 1:
            n = len(rows) - 1
            more = f" (first {_MAX_ROWS} of {n}; metrics.csv has them all)" if n > _MAX_ROWS else ""
            out += f"<h2>Per image</h2><p>metrics.csv{more}</p>" + _table(rows[0], rows[1:_MAX_ROWS + 1], 1, "per")
    return out


def write_run_report(run_dir) -> Path:
    """Write ``report.html`` into a run directory from its summary.json, grid.png, metrics.csv and
    config.yaml: the labelled grid, the mean metrics (exact values as summary.json has them), the
    per-image table, the run's facts and configuration. Returns its path."""
    run_dir = Path(run_dir)
    s = json.loads((run_dir / "summary.json").read_text())
    title = f"{s.get('verb', s.get('task'))} {s.get('task')}: {s.get('method') or s.get('sampler') or ''}".strip()
    body = _facts(s) + _grid(run_dir, s) + _metrics(run_dir, s)
    if s.get("overrides"):
        body += f"<h2>Command</h2><pre>{_esc(' '.join(s['overrides']))}</pre>"
    if (run_dir / "config.yaml").is_file():
        config = _esc((run_dir / "config.yaml").read_text())
        body += f"<details><summary>config.yaml</summary><pre>{config}</pre></details>"
    return io.atomic_write_text(run_dir / "report.html", _page(title, body))


def _inline(text: str, base: Path) -> str:
    """Markdown's inline forms: images (embedded when the file is there), links (text kept), code, bold."""
    def image(m):
        p = base / m.group(2)
        return _img(p, m.group(1)) if p.is_file() else _esc(m.group(0))
    out, last = [], 0
    for m in re.finditer(r"!\[([^\]]*)\]\(([^)\s]+)\)", text):
        out += [_esc(text[last:m.start()]), image(m)]
        last = m.end()
    out.append(_esc(text[last:]))
    s = "".join(out)
    s = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r"\1", s)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)


def markdown_to_html(md: str, base: Path = Path(".")) -> str:
    """The Markdown subset the experiments write (headings, pipe tables, lists, code blocks, paragraphs,
    images relative to ``base``) as HTML."""
    out, lines, i = [], md.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = next((k for k in range(i + 1, len(lines)) if lines[k].startswith("```")), len(lines))
            out.append(f"<pre>{_esc(chr(10).join(lines[i + 1:j]))}</pre>")
            i = j + 1
            continue
        if line.lstrip().startswith("|"):
            j = i
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in lines[i:j]
                     if not re.fullmatch(r"\s*\|?[\s:|-]+\|?\s*", r)]
            rows = "".join("<tr>" + "".join(f"<{'th' if n == 0 else 'td'} class='l'>{_inline(c, base)}"
                                            f"</{'th' if n == 0 else 'td'}>" for c in r) + "</tr>"
                           for n, r in enumerate(cells))
            out.append(f"<table>{rows}</table>")
            i = j
            continue
        m = re.match(r"(#{1,6})\s+(.*)", line)
        if m:
            level = min(6, len(m.group(1)) + 1)  # the page's own title is the h1
            out.append(f"<h{level}>{_inline(m.group(2), base)}</h{level}>")
        elif re.match(r"\s*[-*]\s+", line):
            item = re.sub(r"^\s*[-*]\s+", "", line)
            out.append(f"<ul><li>{_inline(item, base)}</li></ul>")
        elif line.strip():
            out.append(f"<p>{_inline(line, base)}</p>")
        i += 1
    return "".join(out).replace("</ul><ul>", "")


def write_experiment_report(path, title: str, markdown=None, figures=(), tables=()) -> Path:
    """Write a self-contained HTML page of an experiment's results: its Markdown write-up (a path or the
    text; its tables become HTML tables), then its figures (PNG/SVG paths, e.g. the quality-vs-NFE plots)
    and CSV tables, each embedded in full. Returns the page's path."""
    path = Path(path)
    body, text = [], ""
    if markdown is not None:
        text = Path(markdown).read_text() if isinstance(markdown, Path) or str(markdown).endswith(".md") else markdown
        body.append(markdown_to_html(text, path.parent))
    for fig in map(Path, figures):
        if fig.is_file() and f"({fig.name})" not in text:  # a figure the write-up shows is not repeated
            body.append(f"<figure>{_img(fig, fig.stem)}<figcaption>{_esc(fig.name)}</figcaption></figure>")
    for tab in map(Path, tables):
        if tab.is_file():
            with open(tab, newline="") as f:
                rows = list(csv.reader(f))
            if rows:
                body.append(f"<h2>{_esc(tab.name)}</h2>" + _table(rows[0], rows[1:], 1))
    return io.atomic_write_text(path, _page(title, "".join(body)))
