"""Shared parts of the posterior-sampling benchmark (``bench_posterior.py``, whose docstring explains it).

The mixture problem's deepinv side (the prior's exact denoiser and A's SVD as deepinv objects through
the library's bridges, the problem mapped to [0, 1]), one deepinv run, the sliced-Wasserstein distance to
a large exact reference set, CSV and elapsed-time files, and the NFE plot grid that both stages draw. The sweep's floor and oracle come
from ``invscore.testing.posterior_references``.
"""
from __future__ import annotations

import csv
import os

import torch

import operators
from invscore.io import atomic_write_text, write_csv as _write_csv
from invscore.priors.deepinv_bridge import UnitDenoiser

from inverse_common import deepinv_sample

C = 20.0  # x = C (2u - 1): u in [0, 1] for deepinv
ORACLE_STEPS = 60
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SWEEP = "posterior_benchmark.sweep"  # stage 1: the N = 300 sweep of every method and configuration
FINAL = "posterior_benchmark"  # stage 2: the decisive rerun of the contenders


def deepinv_setup(p, n: int):
    """The mixture problem ``p`` for deepinv, in [0, 1] coordinates x = C (2u − 1): (the prior's exact MMSE
    denoiser counting its calls, A's SVD as a DecomposablePhysics, y_u repeated n times), on deepinv's
    image layout (B, 1, 1, d)."""
    d, d_y = p.A.shape[1], p.A.shape[0]
    op = operators.DenseOperator(p.A, input_shape=(1, 1, d), output_shape=(1, 1, d_y), noise=p.sigma_y)
    den = UnitDenoiser(p.prior, scale=C, dtype=torch.float64)
    phys = operators.to_deepinv(op, decomposable=True, unit_scale=C)
    y_u = operators.to_unit_measurement(op, p.y.reshape(1, 1, 1, d_y), unit_scale=C)
    return den, phys, y_u.expand(n, 1, 1, d_y).contiguous()


def run_deepinv(method, cfg, nfe, den, phys, y_u, seed):
    """One deepinv run targeting ``nfe`` denoiser calls; returns samples in [0, 1] space (B, 1, 1, d)."""
    return deepinv_sample(method, cfg, nfe, den, phys, y_u, seed)


def sw_to_reference(x, ref_sorted, dirs):
    """Sliced W2 between N samples and M = k·N reference samples (projections pre-sorted, ``(M, P)``): in 1-D
    the optimal coupling of sorted sets matches the i-th sample with reference points k·i .. k·i + k − 1,
    so this is exact, not a quantile approximation."""
    n, m = x.shape[0], ref_sorted.shape[0]
    if m % n:
        raise ValueError(f"the reference size {m} must be a multiple of N = {n}")
    px, _ = torch.sort(x.reshape(n, -1).to(torch.float64) @ dirs, dim=0)
    return float(((px.repeat_interleave(m // n, dim=0) - ref_sorted) ** 2).mean().sqrt())


# --- files: results/<prefix>.{csv,elapsed} -----------------------------------------------------------------

def write_csv(prefix, fields, rows, float_fmt):
    _write_csv(os.path.join(RESULTS, prefix + ".csv"), rows, fields=fields, float_format=float_fmt)


def read_csv(prefix, ints, floats):
    """The rows of ``results/<prefix>.csv`` with the columns ``ints`` and ``floats`` converted."""
    rows = []
    with open(os.path.join(RESULTS, prefix + ".csv")) as f:
        for r in csv.DictReader(f):
            for k in ints:
                r[k] = int(r[k])
            for k in floats:
                r[k] = float(r[k])
            rows.append(r)
    return rows


def _elapsed_path(prefix):
    return os.path.join(RESULTS, prefix + ".elapsed")


def read_elapsed(prefix):
    """Seconds the stage's last full run took (``nan`` where not recorded)."""
    path = _elapsed_path(prefix)
    if not os.path.exists(path):
        return float("nan")
    with open(path) as f:
        return float(f.read())


def write_elapsed(prefix, elapsed):
    atomic_write_text(_elapsed_path(prefix), f"{elapsed:.1f}\n")


def problem_tables(title, problems, rows, heading, header, fmt_row):
    """Markdown: a section ``## title``, then per problem (d, d_y) a heading ``### d=.., d_y=.. (heading(first
    row))`` and a table with the columns ``header`` and a line ``fmt_row(r)`` per row of that problem."""
    lines = ["", f"## {title}", ""]
    for d, d_y in problems:
        rs = [r for r in rows if (r["d"], r["d_y"]) == (d, d_y)]
        lines += [f"### d={d}, d_y={d_y} ({heading(rs[0])})", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        lines += [fmt_row(r) for r in rs]
        lines.append("")
    return lines


def notes_section(notes, failures):
    """Markdown: the section of notes, then one line per failed run."""
    return ["## Notes and failures", ""] + [f"- {s}" for s in notes] + [f"- {s}" for s in failures]


def write_md(prefix, lines):
    atomic_write_text(os.path.join(RESULTS, prefix + ".md"), "\n".join(lines) + "\n")


def write_html(prefix):
    """RESULTS/prefix.html: the .md, the quality-vs-NFE figure and the CSV in one self-contained page."""
    from invscore.run.report import write_experiment_report
    base = os.path.join(RESULTS, prefix)
    write_experiment_report(base + ".html", prefix, markdown=base + ".md", figures=[base + ".png"],
                            tables=[base + ".csv"])


# --- the plot: one panel per problem (d rows, d_y columns), one line per (library, method) ---------------

def plot_grid(rows, path, series, refs, ylabel, title, xticks=None, fig_legend=False):
    """Draws ``series(ax, rows_of_method, label, color, linestyle, marker)`` per method and ``refs(ax, rows)``
    (reference lines) per panel; invscore solid with circles, deepinv dashed with squares, log-log axes.
    ``xticks``: fixed NFE ticks; ``fig_legend``: one legend below the panels instead of one in the top right."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    probs = sorted({(r["d"], r["d_y"]) for r in rows})
    ds, dys = sorted({d for d, _ in probs}), sorted({dy for _, dy in probs})
    # at least two panels wide, so the title and the figure legend fit a one-problem table
    fig, axes = plt.subplots(len(ds), len(dys), figsize=(4.2 * max(len(dys), 2), 3.6 * len(ds)), squeeze=False)
    methods = sorted({(r["library"], r["method"]) for r in rows}, key=lambda m: (m[0] != "invscore", m[1]))
    drawn = [m for m in methods if m[0] != "oracle"]
    colors = plt.get_cmap("tab10" if len(drawn) <= 10 else "tab20").colors
    style = {m: (colors[i % len(colors)], "-" if m[0] == "invscore" else "--") for i, m in enumerate(drawn)}
    style.update({m: ("k", "-.") for m in methods if m[0] == "oracle"})  # the exact posterior's own score
    for i, d in enumerate(ds):
        for j, d_y in enumerate(dys):
            ax = axes[i][j]
            rs = [r for r in rows if (r["d"], r["d_y"]) == (d, d_y)]
            if not rs:
                continue
            for m in methods:
                c, ls = style[m]
                series(ax, [r for r in rs if (r["library"], r["method"]) == m], m[1], c, ls,
                       "o" if m[0] == "invscore" else "s")
            refs(ax, rs)
            ax.set_xscale("log")
            ax.set_yscale("log")
            if xticks:
                ax.set_xticks(xticks, [str(v) for v in xticks])
                ax.minorticks_off()
            ax.set_title(f"d={d}, d_y={d_y}")
            ax.set_xlabel("NFE per sample")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title)
    if fig_legend:
        handles = {}
        for ax in axes.flat:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 6), fontsize=8)
        fig.tight_layout(rect=(0, 0.07, 1, 1))
    else:
        axes[0][-1].legend(fontsize=7, loc="upper right")
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

