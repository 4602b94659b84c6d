"""A sweep's reproduction report: one self-contained HTML page (inline CSS, inline SVG, no script).

Pure: from a ``SweepReport`` (the sweep, its cells' final metrics and downsampled series, loaded by
``service.tracking.sweep_report``) to an HTML string. The page holds

- a results table like the paper's Table 2 / Table 3: one row per setting of the swept parameters
  other than ``seed``, with mean ± sample standard deviation over the cells (seeds) that recorded a
  metric, and the paper's number beside ours when the sweep is one of its experiments
  (``mmae.paper_numbers``), each labelled with its scale;
- figures like Fig 1-4: matrix MI and joint entropy (alpha = 1, feature correlation between the
  branches, as Fig 1-3 plot), Def. 5.1 effective rank (Fig 4) and matrix JS (Fig 5) over steps, one
  curve per cell, for whichever of them the cells recorded;
- every cell with its status, so failed and running cells are visible rather than missing.

Every user-provided string (names, tags, parameter values, errors) is HTML-escaped.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from mmae import paper_numbers as paper
from mmae.config import NATIVE_IMAGE_SIZE
from mmae.finite import finite_or_none
from service.store.series import SeriesData

SEED = "seed"
ACCURACIES = ("eval/linear_top1", "eval/linear_top5", "eval/knn_top1")
FINALS = ("info/erank", "info/mi_corr_a1")
CURVES = ("info/mi_corr_a1", "info/joint_entropy_corr_a1", "info/erank", "info/js_corr")
LABELS = {
    "eval/linear_top1": "linear top-1 (%)",
    "eval/linear_top5": "linear top-5 (%)",
    "eval/knn_top1": "kNN top-1 (%)",
    "info/erank": "final erank",
    "info/mi_corr_a1": "final MI",
}
CURVE_TITLES = {
    "info/mi_corr_a1": "Matrix mutual information (α = 1, batch-normalised covariance; Fig 1, 3b)",
    "info/joint_entropy_corr_a1": "Matrix joint entropy (α = 1, batch-normalised covariance; Fig 2, 3a)",
    "info/erank": "Effective rank, Def. 5.1 (Fig 4)",
    "info/js_corr": "Matrix JS divergence between branches (Fig 5a)",
}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
WIDTH, HEIGHT, PAD = 640, 240, 48
TICKS = 5  # labelled values per axis, ends included
DASHES = ("", "6 3", "2 2", "8 3 2 3")  # the seeds of one swept value: one colour, these strokes
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:980px;color:#1b1b1b;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}th,td{padding:.3rem .6rem;border-bottom:1px solid #e3e3e3}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}td.num{white-space:nowrap}th{background:#f4f4f4}
.scale{color:#555;margin:.2rem 0}.paper{background:#fff8e1}.muted{color:#777}
.status-failed{color:#b00020}.status-succeeded{color:#1b7f3b}.status-running{color:#1f5fbf}
figure{margin:1rem 0}svg{background:#fcfcfc;border:1px solid #e3e3e3}
.legend span{display:inline-block;margin-right:1rem}.swatch{display:inline-block;border:0;background:none;
vertical-align:middle;margin-right:4px}
"""


@dataclass(frozen=True)
class ReportCell:
    """One cell: ``params`` as swept, ``config`` its TrainConfig mapping, ``finals`` its final metrics
    (NaN or missing when not recorded), ``series`` its downsampled curves."""

    job_id: int
    name: str
    status: str
    params: dict[str, Any]
    config: dict[str, Any]
    finals: dict[str, float | None]
    series: dict[str, SeriesData] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepReport:
    sweep_id: int
    name: str
    tags: list[str]
    parameters: list[str]  # the swept dotted config fields
    base_config: dict[str, Any]
    cells: list[ReportCell]
    curves_left_out: int = 0  # cells whose curves were not loaded (a sweep larger than the figure cap)


@dataclass(frozen=True)
class PaperColumn:
    """The paper's numbers for one of our metrics, per group key, and the label of their scale."""

    header: str
    label: str
    values: dict[tuple[Any, ...], float]
    digits: int  # as the paper prints them: Table 2 with two decimals, Table 3 with one


def render(report: SweepReport) -> str:
    """The whole page."""
    title = f"Reproduction report · sweep #{report.sweep_id} {report.name}"
    body = [
        f"<h1>{escape(title)}</h1>",
        _facts(report),
        _results(report),
        _findings(report),
        _figures(report),
        _cells(report),
    ]
    head = f'<meta charset="utf-8"><title>{escape(title)}</title><style>{STYLE}</style>'
    return f'<!doctype html>\n<html lang="en"><head>{head}</head><body>{"".join(body)}</body></html>\n'


def ours_label(config: dict[str, Any]) -> str:
    """Our scale, e.g. ``ours: digits 8x8, ViT-tiny (depth 2), 300 steps, batch 128``."""
    data, model = config.get("data", {}), config.get("model", {})
    dataset = data.get("dataset", "digits")
    side = data.get("image_size") or NATIVE_IMAGE_SIZE.get(dataset)
    where = f"{dataset} {side}x{side}" if side else str(dataset)
    depth = f" (depth {model['depth']})" if model.get("depth") else ""
    arch = f"ViT-{model.get('size', 'tiny')}{depth}" if model.get("arch", "vit") == "vit" else str(model["arch"])
    steps, batch = config.get("steps", "?"), data.get("batch_size", "?")
    return f"ours: {where}, {arch}, {steps} steps, batch {batch}"


def _facts(report: SweepReport) -> str:
    counts: dict[str, int] = {}
    for cell in report.cells:
        counts[cell.status] = counts.get(cell.status, 0) + 1
    shown = ", ".join(f"{number} {escape(status)}" for status, number in sorted(counts.items())) or "no cells"
    tags = ", ".join(escape(tag) for tag in report.tags)
    swept = ", ".join(escape(name) for name in report.parameters) or "nothing"
    rows = [("Cells", shown), ("Swept", swept), ("Scale", escape(ours_label(report.base_config)))]
    if tags:
        rows.append(("Tags", tags))
    items = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    return f'<table class="facts">{items}</table>'


def group_key_names(report: SweepReport) -> list[str]:
    """The swept parameters a results row is keyed by: all but ``seed`` (seeds are averaged over)."""
    return [name for name in report.parameters if name != SEED]


def groups(report: SweepReport) -> dict[tuple[Any, ...], list[ReportCell]]:
    """Cells by their values of ``group_key_names``, in first-seen order."""
    names = group_key_names(report)
    grouped: dict[tuple[Any, ...], list[ReportCell]] = {}
    for cell in report.cells:
        grouped.setdefault(tuple(cell.params.get(name) for name in names), []).append(cell)
    return grouped


def mean_std(values: Sequence[float | None]) -> tuple[float, float | None, int] | None:
    """Mean, sample standard deviation (None for one value) and count of the finite ``values``."""
    finite = [value for value in map(finite_or_none, values) if value is not None]
    if not finite:
        return None
    spread = statistics.stdev(finite) if len(finite) > 1 else None
    return statistics.fmean(finite), spread, len(finite)


def format_stat(metric: str, stat: tuple[float, float | None, int] | None, cells: int = 1) -> str:
    """``82.4 ± 1.3`` (accuracies in %), ``12.060``, or an em dash when no cell recorded it; ``(n=2)`` after it
    when fewer than the group's ``cells`` did (a failed or running seed)."""
    if stat is None:
        return "—"
    scale, digits = (100.0, 1) if metric in ACCURACIES else (1.0, 3)
    mean, spread, count = stat
    text = f"{mean * scale:.{digits}f}"
    text = text if spread is None else f"{text} ± {spread * scale:.{digits}f}"
    return text if count >= cells else f"{text} (n={count})"


def recorded_metrics(report: SweepReport) -> tuple[str, ...]:
    """The table's metrics some cell recorded (MI only for Siamese methods, say); all of them before any."""
    shown = tuple(
        metric
        for metric in (*ACCURACIES, *FINALS)
        if any(mean_std([cell.finals.get(metric)]) is not None for cell in report.cells)
    )
    return shown or (*ACCURACIES, *FINALS)


def _results(report: SweepReport) -> str:
    names, metrics = group_key_names(report), recorded_metrics(report)
    columns = paper_columns(report)
    header = "".join(f"<th>{escape(name)}</th>" for name in names)
    header += '<th class="num">cells</th>' + "".join(f'<th class="num">{LABELS[metric]}</th>' for metric in metrics)
    header += "".join(f'<th class="num paper">{escape(column.header)}</th>' for column in columns)
    rows = [_result_row(key, cells, metrics, columns) for key, cells in groups(report).items()]
    scales = "".join(f'<p class="scale">{escape(label)}</p>' for label in dict.fromkeys(c.label for c in columns))
    if columns:
        scales += f'<p class="scale">{escape(ours_label(report.base_config))}</p>'
    note = '<p class="muted">mean ± sample standard deviation over the cells (seeds) that recorded a value.</p>'
    table = f'<table class="results"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    return f"<h2>Results</h2>{table}{note}{scales}"


def _result_row(
    key: tuple[Any, ...], cells: list[ReportCell], metrics: tuple[str, ...], columns: list[PaperColumn]
) -> str:
    keys = "".join(f"<td>{escape(_value(value))}</td>" for value in key)
    done = sum(cell.status == "succeeded" for cell in cells)
    count = f"{done}/{len(cells)} succeeded"
    ours = "".join(
        f'<td class="num">{format_stat(metric, mean_std([cell.finals.get(metric) for cell in cells]), len(cells))}</td>'
        for metric in metrics
    )
    paper_values = "".join(f'<td class="num paper">{_paper_value(column, key)}</td>' for column in columns)
    return f'<tr>{keys}<td class="num">{count}</td>{ours}{paper_values}</tr>'


def _paper_value(column: PaperColumn, key: tuple[Any, ...]) -> str:
    value = column.values.get(key)
    return "—" if value is None else f"{value:.{column.digits}f}"


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _methods(report: SweepReport) -> set[str]:
    return {str(cell.config.get("method")) for cell in report.cells} or {str(report.base_config.get("method"))}


def paper_columns(report: SweepReport) -> list[PaperColumn]:
    """The paper's numbers beside ours: Table 2 for an official-convention M-MAE sweep over ``loss.mu``,
    Table 3 for a sweep over ``method`` among MAE, U-MAE and M-MAE (and nothing else but seeds)."""
    names = group_key_names(report)
    keys = list(groups(report))
    if names == ["loss.mu"] and _methods(report) == {"mmae"} and _conventions(report) == {"official"}:
        values = {key: paper.TABLE2_MU_LINEAR_TOP1[key[0]] for key in keys if key[0] in paper.TABLE2_MU_LINEAR_TOP1}
        return [PaperColumn("paper linear top-1 (%)", paper.TABLE2.label, values, 2)] if values else []
    if names == ["method"] and _methods(report) <= set(paper.TABLE3_CIFAR100):
        return [
            PaperColumn(
                f"paper {LABELS[f'eval/{metric}']}",
                paper.TABLE3.label,
                {key: paper.TABLE3_CIFAR100[key[0]][metric] for key in keys},
                1,
            )
            for metric in ("linear_top1", "linear_top5")
        ]
    return []


def _conventions(report: SweepReport) -> set[str]:
    return {str(cell.config.get("loss", {}).get("mu_convention")) for cell in report.cells}


def paper_findings(report: SweepReport) -> list[tuple[paper.PaperSetting, str]]:
    """The paper's figure findings this sweep can be held against (figures print no numbers)."""
    names, methods = group_key_names(report), _methods(report)
    found = []
    if names == ["loss.temperature"] and methods == {"simclr"}:
        temperatures = {cell.params.get("loss.temperature") for cell in report.cells}
        if temperatures & set(paper.FIGURE3_TEMPERATURES):
            found.append((paper.FIGURE3, paper.FIGURE_FINDINGS["fig3"]))
    if names == ["method"] and methods & set(paper.FIGURE1_METHODS):
        found += [(paper.FIGURE1, paper.FIGURE_FINDINGS[name]) for name in ("fig1", "fig2", "fig5")]
    if names == ["method"] and len(methods & set(paper.TABLE3_CIFAR100)) > 1:
        found.append((paper.FIGURE4, paper.FIGURE_FINDINGS["fig4"]))
    return found


def _findings(report: SweepReport) -> str:
    found = paper_findings(report)
    if not found:
        return ""
    items = "".join(
        f'<li><span class="scale">{escape(setting.label)}</span> (figure only, no numbers printed): {escape(text)}</li>'
        for setting, text in found
    )
    ours = escape(ours_label(report.base_config))
    return f'<h2>What the paper\'s figures show</h2><ul>{items}</ul><p class="scale">{ours}</p>'


def _figures(report: SweepReport) -> str:
    charts = [line_chart(metric, report.cells) for metric in CURVES]
    shown = "".join(chart for chart in charts if chart)
    if not shown:
        return '<h2>Figures</h2><p class="muted">No information curves recorded yet.</p>'
    left = report.curves_left_out
    note = f'<p class="muted">Curves of {left} further cells are left out.</p>' if left else ""
    return f"<h2>Figures</h2>{shown}{note}"


def cell_label(cell: ReportCell, parameters: Sequence[str]) -> str:
    values = ", ".join(f"{name.rsplit('.', 1)[-1]}={_value(cell.params.get(name))}" for name in parameters)
    return f"#{cell.job_id} {values}".strip()


def line_chart(metric: str, cells: Sequence[ReportCell]) -> str:
    """An inline SVG with one polyline per cell that recorded ``metric`` (finite points only), or ''."""
    curves = [(cell, _finite_points(cell.series[metric])) for cell in cells if metric in cell.series]
    curves = [(cell, points) for cell, points in curves if points]
    if not curves:
        return ""
    xs = [x for _, points in curves for x, _ in points]
    ys = [y for _, points in curves for _, y in points]
    to_svg = _Scale(min(xs), max(xs), min(ys), max(ys))
    strokes = _strokes([cell for cell, _ in curves])
    lines = "".join(
        f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" stroke-dasharray="{dash}" '
        f'points="{" ".join(to_svg.point(x, y) for x, y in points)}"/>'
        for (_, points), (colour, dash) in zip(curves, strokes, strict=True)
    )
    parameters = sorted({name for cell, _ in curves for name in cell.params})
    legend = "".join(
        f'<span><svg class="swatch" width="18" height="6"><path d="M0,3H18" stroke="{colour}" stroke-width="2" '
        f'stroke-dasharray="{dash}"/></svg>{escape(cell_label(cell, parameters))}</span>'
        for (cell, _), (colour, dash) in zip(curves, strokes, strict=True)
    )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" role="img" aria-label="{escape(CURVE_TITLES[metric])}">{to_svg.axes()}{lines}</svg>'
    )
    caption = f"<figcaption>{escape(CURVE_TITLES[metric])} against step</figcaption>"
    return f'<figure data-metric="{escape(metric)}">{caption}{svg}<div class="legend">{legend}</div></figure>'


def _strokes(cells: Sequence[ReportCell]) -> list[tuple[str, str]]:
    """(colour, dash) per cell: one colour per swept value (every parameter but the seed), one dash per seed
    within it, so a method's or a mu's seeds read as one family."""
    families: dict[tuple[Any, ...], int] = {}
    seen: dict[tuple[Any, ...], int] = {}
    strokes = []
    for cell in cells:
        family = tuple(sorted((name, str(value)) for name, value in cell.params.items() if name != "seed"))
        colour = PALETTE[families.setdefault(family, len(families)) % len(PALETTE)]
        seen[family] = seen.get(family, -1) + 1
        strokes.append((colour, DASHES[seen[family] % len(DASHES)]))
    return strokes


def _finite_points(series: SeriesData) -> list[tuple[float, float]]:
    return [(x, y) for x, y in zip(series.steps, series.values, strict=True) if finite_or_none(y) is not None]


@dataclass(frozen=True)
class _Scale:
    """Data coordinates to the SVG's, inside a ``PAD`` margin; a flat range is widened to be drawable."""

    x0: float
    x1: float
    y0: float
    y1: float

    def point(self, x: float, y: float) -> str:
        width, height = self.x1 - self.x0 or 1.0, self.y1 - self.y0 or 1.0
        px = PAD + (x - self.x0) / width * (WIDTH - 2 * PAD)
        py = HEIGHT - PAD + (self.y0 - y) / height * (HEIGHT - 2 * PAD)
        return f"{px:.1f},{py:.1f}"

    def axes(self) -> str:
        """The frame, ``TICKS`` labelled values on each axis, and light gridlines across the plot."""
        left, right, top, bottom = PAD, WIDTH - PAD, PAD, HEIGHT - PAD
        parts = [f'<path d="M{left},{top}V{bottom}H{right}" fill="none" stroke="#999"/>']
        for i in range(TICKS):
            share = i / (TICKS - 1)
            x, y = left + share * (right - left), bottom - share * (bottom - top)
            step, value = self.x0 + share * (self.x1 - self.x0), self.y0 + share * (self.y1 - self.y0)
            if i:
                parts.append(f'<path d="M{left},{y:.1f}H{right}" stroke="#e6e6e6"/>')
            parts.append(_label(x, bottom + 16, "middle", f"{step:.4g}"))
            parts.append(_label(left - 4, y + 4, "end", f"{value:.3g}"))
        parts.append(_label((left + right) / 2, HEIGHT - 8, "middle", "step"))
        return "".join(parts)


def _label(x: float, y: float, anchor: str, text: str) -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="11" fill="#555">{escape(text)}</text>'


def _cells(report: SweepReport) -> str:
    parameters, metrics = report.parameters, recorded_metrics(report)
    header = "<th>cell</th><th>name</th>" + "".join(f"<th>{escape(name)}</th>" for name in parameters)
    header += "<th>status</th>" + "".join(f'<th class="num">{LABELS[metric]}</th>' for metric in metrics)
    rows = []
    for cell in report.cells:
        values = "".join(f"<td>{escape(_value(cell.params.get(name)))}</td>" for name in parameters)
        status = escape(cell.status)
        finals = "".join(
            f'<td class="num">{format_stat(metric, mean_std([cell.finals.get(metric)]))}</td>' for metric in metrics
        )
        rows.append(
            f'<tr data-job-id="{cell.job_id}"><td>#{cell.job_id}</td><td>{escape(cell.name)}</td>{values}'
            f'<td class="status-{status}">{status}</td>{finals}</tr>'
        )
    table = f'<table class="cells"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    return f"<h2>Cells</h2>{table}"
