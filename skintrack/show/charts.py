"""Charts: the study helpers' DataFrames in, matplotlib Figures out (no SQL here, no pyplot state).

One style for all: the Okabe-Ito colour-blind-safe palette, labels and units from the metric catalog.
`save(fig, "out/name")` writes PNG, SVG and PDF.

Example
-------
>>> from skintrack.demo import demo_study
>>> s = demo_study()
>>> fig = trend_lines(s.timeline("score.water"), s.cohort("score.water"), "score.water", s.sql("select * from subjects"))
>>> [ax.get_ylabel() for ax in fig.axes][:1]
['Skin moisture score (points)']
"""
from __future__ import annotations

import contextlib
import functools
import io
from pathlib import Path

import matplotlib
import matplotlib.collections
import matplotlib.patches
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse
from matplotlib.ticker import NullLocator

from ..errors import UsageError
from ..sinks import html as escape_html
from ..tables.catalog import metric_info
from ..tables.limits import sent_size

# zlib's fastest level: a figure's PNG in about a third of the time of Pillow's default (6), for ~20% more bytes
PNG_COMPRESSION = {"compress_level": 1}
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.titleweight": "bold", "axes.spines.top": False,
         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25, "legend.frameon": False,
         "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO), "figure.dpi": 110, "savefig.bbox": "tight",
         "text.parse_math": False}  # labels are data: an arm named "$x$" is drawn as written, never as math


def styled(chart):
    """Draw a chart function's figure in the one style (every text it makes included)."""

    @functools.wraps(chart)
    def draw(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return chart(*args, **kwargs)

    return draw


class Chart(Figure):
    """A matplotlib Figure that shows itself in Jupyter without pyplot (no global figure state)."""

    def _repr_png_(self) -> bytes:
        return png_bytes(self)


def _figure(width=6.4, height=3.8, layout: str | None = "constrained") -> Figure:
    with matplotlib.rc_context(STYLE):
        fig = Chart(figsize=(width, height), layout=layout)
    fig.set_facecolor("white")
    return fig


def _image_panels(width: float, height: float, n: int) -> tuple[Figure, list]:
    """A figure of `n` image panels side by side, without axes, a title's room above each. Fixed margins:
    no tick or label to fit, so the constrained layout (a third of such a figure's drawing) has no work. No
    tick is made either: placing a title measures the hidden y axis, whose ticks cost a third of the PNG."""
    fig = _figure(width, height, layout=None)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.9, wspace=0.03)
    axes = [_axes(fig, 1, n, i + 1) for i in range(n)]
    for ax in axes:
        ax.axis("off")
        ax.grid(False)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(NullLocator())
            axis.set_minor_locator(NullLocator())
    return fig, axes


def _axes(fig, *args):
    with matplotlib.rc_context(STYLE):
        return fig.add_subplot(*args)


def label(metric: str) -> str:
    """'Description (unit)' for an axis."""
    info = metric_info(metric)
    text = info["description"].rstrip(".")
    return f"{text} ({info['unit']})" if info["unit"] else text


def arm_colors(arms) -> dict:
    """A fixed colour per arm (sorted), the same in every chart."""
    return {a: OKABE_ITO[i % len(OKABE_ITO)] for i, a in enumerate(sorted(a for a in arms if isinstance(a, str)))}


def _in_order(held, arms=None) -> list:
    """The arms held, in the order of `arms` (the plan's: the control first), any other after them by name."""
    held = sorted(a for a in set(held) if isinstance(a, str))
    return [a for a in (arms or []) if a in held] + [a for a in held if a not in (arms or [])]


def _visit_positions(visits) -> dict:
    return {v: i for i, v in enumerate(visits)}


def _with_arm(df: pd.DataFrame) -> pd.DataFrame:
    """A study without arms is one group, 'all'."""
    return df.assign(arm=df["arm"].fillna("all")) if "arm" in df else df.assign(arm="all")


@styled
def trend_lines(timeline: pd.DataFrame, cohort: pd.DataFrame, metric: str, subjects: pd.DataFrame | None = None,
                arms: list | None = None) -> Figure:
    """Per-subject lines (thin) with the mean and 95% CI per visit by arm (bold), arms in the order of `arms`
    (the control first; by name when not given)."""
    fig = _figure()
    ax = _axes(fig, 1, 1, 1)
    cohort = _with_arm(cohort)
    visits = list(dict.fromkeys(cohort["visit"]))
    pos = _visit_positions(visits)
    colors = arm_colors(cohort["arm"].unique())
    tl = _with_arm(timeline.merge(subjects[["subject_id", "arm"]], on="subject_id", how="left")
                   if subjects is not None and "arm" in subjects else timeline)
    arm_of, lines = _subject_lines(tl, pos)
    ax.add_collection(matplotlib.collections.LineCollection(lines, colors=[colors.get(a, "#999999") for a in arm_of],
                                                            alpha=0.18, linewidths=0.8))
    width = 0.08 * (len(colors) > 1)
    order = _in_order(cohort["arm"].unique(), arms)
    for i, (arm, g) in enumerate((a, cohort[cohort["arm"] == a]) for a in order):
        x = np.array([pos[v] for v in g["visit"]]) + (i - (len(colors) - 1) / 2) * width
        ax.errorbar(x, g["mean"], yerr=np.maximum(0, [g["mean"] - g["ci_low"], g["ci_high"] - g["mean"]]),
                    color=colors.get(arm, "k"),
                    lw=2.2, capsize=3, marker="o", ms=5, label=f"{arm} (mean, 95% CI)" if arm else "mean, 95% CI")
    ax.set_xticks(range(len(visits)), visits)
    ax.set_xlabel("Visit")
    ax.set_ylabel(label(metric))
    ax.set_title(f"{metric_info(metric)['description'].rstrip('.')}: every subject, and the mean by arm")
    _legend_below(ax, len(order))
    return fig


def _subject_lines(timeline: pd.DataFrame, pos: dict) -> tuple[list, list]:
    """(each line's arm, each line's (x, value) points): one line per subject through its visits in `pos`, in
    the timeline's order, subjects sorted, broken where a value is missing (as a plotted line breaks). One
    collection draws them all: a line per subject as its own artist cost 3 ms each to make and draw."""
    tl = timeline[timeline["visit"].isin(pos)].sort_values("subject_id", kind="stable")
    ids, values = tl["subject_id"].to_numpy(), tl["value"].to_numpy(float)
    missing = np.isnan(values)
    starts = np.ones(len(ids), bool)
    starts[1:] = (ids[1:] != ids[:-1]) | missing[:-1]
    piece = np.cumsum(starts)[~missing]
    xy = np.column_stack([tl["visit"].map(pos).to_numpy(float), values])[~missing]
    cut = np.flatnonzero(np.diff(piece, prepend=-1))
    return list(tl["arm"].to_numpy()[~missing][cut]), np.split(xy, cut[1:]) if len(cut) else []


def _grouped_bars(ax, data: pd.DataFrame, visits: list, value: str, low: str, high: str, scale: float = 1,
                  arms: list | None = None):
    """Bars per visit, side by side per arm (in the order of `arms`), with the interval [low, high]; returns
    (x, rows) per arm."""
    arms = _in_order(data["arm"].dropna().unique(), arms)
    colors, width = arm_colors(arms), 0.8 / max(1, len(arms))
    drawn = []
    for i, arm in enumerate(arms):
        g = data[data["arm"] == arm].set_index("visit").reindex(visits)
        x = np.arange(len(visits)) + (i - (len(arms) - 1) / 2) * width
        err = np.maximum(0, [scale * (g[value] - g[low]), scale * (g[high] - g[value])])
        ax.bar(x, scale * g[value], width * 0.92, color=colors[arm], label=arm, yerr=err, capsize=3,
               error_kw={"lw": 1})
        drawn.append((x, g))
    return drawn


def _stars(p) -> str:
    if p is None or not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "ns"


def _mark_visits(ax, visits: list, low, high, tests: pd.DataFrame) -> None:
    """Above each visit, the stars of its tests' p-values, one line per treatment named by its arm when there
    are several, with room made for them (the legend goes below the axes, never over a mark). Where no
    interval is defined (one subject at each visit), the marks go above what the axes hold."""
    bottom, top = ax.get_ylim() if high.isna().all() or low.isna().all() else (low.min(), high.max())
    span = (top - min(0, bottom)) or 1
    arm = "treatment" if "treatment" in tests else None
    several = arm is not None and tests[arm].nunique() > 1
    lines = 1
    for visit, g in tests.groupby("visit", sort=False):
        if visit in visits:
            text = "\n".join(f"{t}: {_stars(p)}" for t, p in zip(g[arm], g["p"])) if several else \
                " ".join(_stars(p) for p in g["p"])
            lines = max(lines, text.count("\n") + 1)
            ax.text(visits.index(visit), top + 0.05 * span, text, ha="center", va="bottom", fontsize=8)
    ax.set_ylim(top=top + (0.12 + 0.09 * lines) * span)


def _legend_below(ax, n: int) -> None:
    """The legend under the axes (nothing drawn inside the plot can hide under it): one row when the names are
    short, else one column, each name cut to 40 characters (the tables print it whole)."""
    handles, labels = ax.get_legend_handles_labels()
    labels = [x if len(x) <= 40 else x[:39] + "\u2026" for x in labels]
    ncols = max(1, n) if sum(map(len, labels)) <= 80 else 1
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=ncols, frameon=False)


@styled
def change_bars(cohort: pd.DataFrame, metric: str, tests: pd.DataFrame | None = None, arms: list | None = None) -> Figure:
    """Mean change from baseline with 95% CI, by visit and arm (in the order of `arms`); `tests` (compare_arms
    rows) adds each treatment's significance marks: * p<0.05, ** p<0.01, *** p<0.001, ns otherwise."""
    fig = _figure()
    ax = _axes(fig, 1, 1, 1)
    data = _with_arm(cohort[cohort["change_n"] > 0])  # baseline rows are no change
    visits = list(dict.fromkeys(data["visit"]))
    arms = _in_order(data["arm"].dropna().unique(), arms)
    _grouped_bars(ax, data, visits, "change_mean", "change_ci_low", "change_ci_high", arms=arms)
    ax.axhline(0, color="black", lw=0.8)
    if tests is not None and len(tests):
        _mark_visits(ax, visits, data["change_ci_low"], data["change_ci_high"], tests)
    ax.set_xticks(range(len(visits)), visits)
    ax.set_ylabel(f"Change from baseline ({metric_info(metric)['unit'] or 'value'})")
    ax.set_title(f"{metric_info(metric)['description'].rstrip('.')}: change from baseline (mean, 95% CI)")
    _legend_below(ax, len(arms))
    return fig


@styled
def waterfall(change: pd.DataFrame, metric: str, visit: str, subjects: pd.DataFrame | None = None,
              arms: list | None = None) -> Figure:
    """Every subject's % change at `visit`, sorted, coloured by arm."""
    fig = _figure()
    ax = _axes(fig, 1, 1, 1)
    d = change[(change["visit"] == visit) & change["pct_change"].notna()]
    if subjects is not None and "arm" in subjects:
        d = d.merge(subjects[["subject_id", "arm"]], on="subject_id", how="left")
    d = _with_arm(d).sort_values("pct_change", ascending=False)
    colors = arm_colors(d["arm"].dropna().unique())
    ax.bar(range(len(d)), d["pct_change"], color=[colors.get(a, "#999999") for a in d["arm"]], width=0.85)
    ax.axhline(0, color="black", lw=0.8)
    ax.legend(handles=[matplotlib.patches.Patch(color=colors[a], label=a) for a in _in_order(colors, arms)],
              loc="upper right")
    ax.set_xticks([])
    ax.set_xlabel(f"Subjects, sorted ({len(d)})")
    ax.set_ylabel("Change from baseline (%)")
    better = metric_info(metric)["better"]
    ax.set_title(f"{metric_info(metric)['description'].rstrip('.')} at {visit}: % change per subject"
                 + (f" ({better} is better)" if better != "none" else ""))
    return fig


@styled
def responder_bars(responders: pd.DataFrame, metric: str, threshold: float, relative: bool = False,
                   arms: list | None = None) -> Figure:
    """Share of responders by visit and arm (in the order of `arms`), with Wilson 95% CIs."""
    fig = _figure()
    ax = _axes(fig, 1, 1, 1)
    responders = _with_arm(responders)
    visits = list(dict.fromkeys(responders["visit"]))
    drawn = _grouped_bars(ax, responders, visits, "rate", "ci_low", "ci_high", scale=100, arms=arms)
    for x, g in drawn:
        for xi, r, n, hi in zip(x, g["responders"], g["n"], g["ci_high"]):
            if n > 0:  # an arm not seen at a visit has no bar to label
                ax.text(xi, 100 * hi + 1.5, f"{int(r)}/{int(n)}", ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, 112)
    ax.set_xticks(range(len(visits)), visits)
    ax.set_ylabel("Responders (%)")
    unit = "%" if relative else f" {metric_info(metric)['unit']}"
    ax.set_title(f"{metric_info(metric)['description'].rstrip('.')}: improved by at least {threshold:g}{unit}")
    _legend_below(ax, len(drawn))
    return fig


@styled
def agreement_scatter(table: pd.DataFrame) -> Figure:
    """The pairs of `Study.agreement`'s table (its ``.attrs``): values and changes from baseline side by side,
    each with Pearson's r in the title and, with a shared unit, the line of equality."""
    a, b = table.attrs["a"], table.attrs["b"]
    fig = _figure(9.6, 4.2)
    for i, (on, pairs) in enumerate((("values", table.attrs["values"]), ("changes from baseline",
                                                                          table.attrs["changes"])), 1):
        ax = _axes(fig, 1, 2, i)
        ax.scatter(pairs["a"], pairs["b"], s=12, alpha=0.7, color="#1f77b4")
        if table.attrs["same_unit"] and len(pairs):
            lo, hi = min(pairs["a"].min(), pairs["b"].min()), max(pairs["a"].max(), pairs["b"].max())
            ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls="--", label="equality")
            ax.legend(loc="upper left")
        r = table[(table["on"] == on) & (table["statistic"] == "pearson")].iloc[0]
        ax.set_title(f"{on.capitalize()}: r {r.estimate:.2f} (95% CI {r.ci_low:.2f} to {r.ci_high:.2f}), n {r.n}",
                     fontsize=9)
        ax.set_xlabel(label(a) + (" change" if i == 2 else ""))
        ax.set_ylabel(label(b) + (" change" if i == 2 else ""))
    return fig


@styled
def score_profile(profile: pd.DataFrame, subject: str) -> Figure:
    """One subject's health scores, baseline against latest: `profile` has metric, baseline, latest
    (metrics without a better-direction, such as the skin-type scale, are left out)."""
    profile = profile[[metric_info(m)["better"] == "higher" for m in profile["metric"]]]
    fig = _figure(6.4, 0.32 * len(profile) + 1.2)
    ax = _axes(fig, 1, 1, 1)
    y = np.arange(len(profile))
    ax.hlines(y, profile["baseline"], profile["latest"], color="#999999", lw=2)
    ax.scatter(profile["baseline"], y, color=OKABE_ITO[4], label="baseline", zorder=3)
    ax.scatter(profile["latest"], y, color=OKABE_ITO[0], label="latest", zorder=3)
    ax.set_yticks(y, [metric_info(m)["description"].rstrip(".").replace(" score", "") for m in profile["metric"]])
    ax.set_xlabel("Score (points, higher is healthier)")
    ax.set_xlim(0, 103)
    ax.set_title(f"Subject {subject}: scores at baseline and at the latest visit")
    ax.legend(loc="lower left")
    return fig


@styled
def subject_trend(values: pd.DataFrame, subject: str, visits: list) -> Figure:
    """One subject's metrics over the visits in schedule order: `values` has visit, metric, value."""
    fig = _figure(6.4, 3.0)
    ax = _axes(fig, 1, 1, 1)
    x = _visit_positions(visits)
    for i, (metric, g) in enumerate(values.groupby("metric", sort=True)):
        g = g[g["visit"].isin(x)].sort_values("visit", key=lambda c: c.map(x))
        ax.plot(g["visit"].map(x), g["value"], marker="o", color=OKABE_ITO[i % len(OKABE_ITO)], label=label(metric))
    ax.set_xticks(range(len(visits)), visits)
    ax.set_xlabel("Visit")
    ax.set_title(f"Subject {subject}: values over the visits")
    ax.legend(loc="best", fontsize=7)
    return fig


# Where each region sits on the face schematic (x, y in a unit box; y up), and its patch size.
REGION_XY = {"forehead": (0.5, 0.82, 0.38, 0.12), "t_zone": (0.5, 0.6, 0.12, 0.3), "nose": (0.5, 0.5, 0.1, 0.14),
             "glabella": (0.5, 0.7, 0.1, 0.06), "left_cheek": (0.7, 0.45, 0.16, 0.16),
             "right_cheek": (0.3, 0.45, 0.16, 0.16), "chin": (0.5, 0.14, 0.18, 0.09),
             "left_eye": (0.64, 0.62, 0.14, 0.06), "right_eye": (0.36, 0.62, 0.14, 0.06),
             "left_undereye": (0.64, 0.55, 0.14, 0.05), "right_undereye": (0.36, 0.55, 0.14, 0.05),
             "left_crowsfeet": (0.8, 0.62, 0.06, 0.09), "right_crowsfeet": (0.2, 0.62, 0.06, 0.09),
             "left_nasolabial": (0.6, 0.36, 0.05, 0.14), "right_nasolabial": (0.4, 0.36, 0.05, 0.14),
             "left_mouth": (0.6, 0.25, 0.06, 0.06), "right_mouth": (0.4, 0.25, 0.06, 0.06)}


@styled
def face_regions(values: pd.DataFrame, title: str, unit: str = "") -> Figure:
    """Regional values (`region`, `value`) drawn on a face schematic (the subject's left is on the image's
    right, as the API reports it), with a colour bar."""
    missing = {"region", "value"} - set(values.columns)
    if missing:
        raise UsageError(f"face_regions needs one row per face region with columns region and value (as "
                         f"`study.plot.regions` gathers them); this frame has no {', '.join(sorted(missing))} "
                         f"(its columns: {', '.join(map(str, values.columns))})")
    fig = _figure(4.6, 5.0)
    ax = _axes(fig, 1, 1, 1)
    ax.add_patch(Ellipse((0.5, 0.5), 0.78, 0.98, fc="#f7f2ee", ec="#555555", lw=1.2))
    d = values[values["region"].isin(REGION_XY)].dropna(subset=["value"])
    cmap = matplotlib.colormaps["cividis"]
    lo, hi = (d["value"].min(), d["value"].max()) if len(d) else (0, 1)
    norm = matplotlib.colors.Normalize(lo, hi if hi > lo else lo + 1)
    for _, r in d.iterrows():
        x, y, w, h = REGION_XY[r["region"]]
        ax.add_patch(Ellipse((x, y), w, h, fc=cmap(norm(r["value"])), ec="white", lw=1))
        ax.text(x, y, f"{r['value']:.3g}", ha="center", va="center", fontsize=7,
                color="white" if norm(r["value"]) < 0.55 else "black")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.text(0.02, 0.02, "subject's right", fontsize=7, color="#555555")
    ax.text(0.98, 0.02, "subject's left", fontsize=7, color="#555555", ha="right")
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.6, label=unit)
    ax.set_title(title)
    return fig


def _rgba(path):
    """An image file as RGBA (read and closed)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGBA")


def _overlay(base, layer):
    """An API face map over its photo (the same size): blended when the map is opaque (a white background),
    laid over it otherwise."""
    from PIL import Image

    return Image.blend(base, layer, 0.55) if layer.getextrema()[3][0] == 255 else Image.alpha_composite(base, layer)


@styled
def map_panels(before: Path, after: Path, name: str, photo_before: Path | None = None,
               photo_after: Path | None = None, titles=("Baseline", "Latest")) -> Figure:
    """Before/after panels of one API face map, laid over the photo when the photo is at hand."""
    fig, axes = _image_panels(7.2, 4.0, 2)
    for ax, layer, photo, title in zip(axes, (before, after), (photo_before, photo_after), titles):
        img = _rgba(layer)
        if isinstance(photo, (str, Path)) and Path(photo).exists():  # a study may not know its photos
            img = _overlay(_rgba(photo).resize(img.size), img)
        ax.imshow(img)
        ax.set_title(f"{title}: {name.replace('_', ' ')}")
    return fig


@styled
def qc_overview(qc: pd.DataFrame) -> Figure:
    """How many analyses each QC reason flags, by visit."""
    from ..analysis.qc import FLAGS

    fig = _figure(6.4, 3.2)
    ax = _axes(fig, 1, 1, 1)
    counts = qc.groupby("visit", sort=False)[list(FLAGS)].sum() if len(qc) else pd.DataFrame(columns=list(FLAGS))
    counts = counts.loc[:, counts.sum() > 0] if len(counts) else counts
    if counts.empty:
        ax.text(0.5, 0.5, "No analysis flagged", ha="center", va="center", transform=ax.transAxes)
    else:
        bottom = np.zeros(len(counts))
        for i, flag in enumerate(counts.columns):
            ax.bar(range(len(counts)), counts[flag], bottom=bottom, color=OKABE_ITO[i % 8], label=flag)
            bottom += counts[flag].to_numpy()
        ax.set_xticks(range(len(counts)), counts.index)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(loc="best")
    ax.set_ylabel("Analyses flagged")
    ax.set_title(f"Capture quality: {int(qc['flagged'].sum()) if len(qc) else 0} of {len(qc)} analyses flagged")
    return fig


@styled
def lsmeans_plot(lsmeans: pd.DataFrame, diffs: pd.DataFrame, metric: str, arms: list | None = None) -> Figure:
    """The MMRM's LS-means of the change with 95% CIs by arm (in the order of `arms`: the control first) and
    visit; each visit is marked with the stars of its treatment-minus-control differences' nominal p-values,
    named by treatment when there are several (the same fit as the tables beside it)."""
    fig = _figure(6.4, 3.6)
    ax = _axes(fig, 1, 1, 1)
    visits = list(dict.fromkeys(lsmeans["visit"]))
    colors = arm_colors(lsmeans["arm"].unique())
    arms = _in_order(lsmeans["arm"].unique(), arms)
    for k, arm in enumerate(arms):
        d = lsmeans[lsmeans["arm"] == arm]
        x = np.array([visits.index(v) for v in d["visit"]]) + (k - (len(arms) - 1) / 2) * 0.08
        ax.errorbar(x, d["estimate"], yerr=[d["estimate"] - d["ci_low"], d["ci_high"] - d["estimate"]], marker="o",
                    capsize=3, color=colors[arm], label=arm, lw=1.6)
    ax.axhline(0, color="black", lw=0.7)
    _mark_visits(ax, visits, lsmeans["ci_low"], lsmeans["ci_high"], diffs)
    ax.set_xticks(range(len(visits)), visits)
    ax.set_ylabel(f"LS-mean change ({metric_info(metric)['unit'] or 'value'})")
    ax.set_title(f"{label(metric)}: LS-mean change (95% CI)\nmarks: each treatment against the control, nominal p")
    _legend_below(ax, len(arms))
    return fig


# The API's face map that shows what a metric measures (by the catalog's feature name).
ENDPOINT_MAPS = {"water": "water_area", "rough": "rough_area", "melanin": "brown_area", "sensitivity": "red_area",
                 "pores": "texture_enhanced_pores", "blackhead": "texture_enhanced_blackheads",
                 "wrinkle": "texture_enhanced_lines", "oily_intensity": "texture_enhanced_oily_area",
                 "oily": "texture_enhanced_oily_area"}


@styled
def photo_pair(photos: list, boxes: list, titles: list, layers: list | None = None, map_name: str | None = None,
               margin: float = 0.12) -> Figure:
    """Photographs side by side, each cropped to its face box (left, top, width, height, from the API, in the
    frame of the photo as it was sent: `--fix` downsizes one above the API's largest side) with a margin and
    drawn at the same size; an API face map (`layers`, the photo's own) laid over its photo, or shown alone
    when the photo is not at hand."""
    fig, axes = _image_panels(2.6 * len(titles) + 0.4, 3.2, len(titles))
    for i, (ax, title) in enumerate(zip(axes, titles)):
        photo = photos[i] if i < len(photos) else None
        layer = layers[i] if layers else None
        base = _rgba(photo) if photo else None
        sent = sent_size(*base.size) if base is not None else None
        if layer is not None:
            over = _rgba(layer)
            base = over if base is None else _overlay(base, over.resize(base.size))
        left, top, width, height = (float(v) for v in boxes[i])
        if sent is not None and sent != base.size:  # the box measures the downsized photo the API saw
            fx, fy = base.size[0] / sent[0], base.size[1] / sent[1]
            left, top, width, height = left * fx, top * fy, width * fx, height * fy
        pad = margin * max(width, height)
        side = max(width, height) + 2 * pad
        cx, cy = left + width / 2, top + height / 2
        crop = base.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2)))
        ax.imshow(crop.resize((480, 480)))
        ax.set_title(title + (f" ({map_name.replace('_', ' ')})" if layer is not None and map_name else ""))
    return fig


def flow_diagram(steps: list[tuple[str, str]]) -> str:
    """The subject flow as inline SVG: one box per (label, count text), arrows between them."""
    width, box, gap = 110, 26, 8
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width * len(steps)} 60" role="img" '
             'aria-label="subject flow" style="width:100%;max-width:180mm;font:9.5px sans-serif">']
    for i, (name, count) in enumerate(steps):
        x = i * width + 2
        parts.append(f'<rect x="{x}" y="8" width="{width - 2 * gap}" height="{box + 16}" rx="4" fill="#eef3f8" '
                     f'stroke="#0072B2"/><text x="{x + (width - 2 * gap) / 2}" y="24" text-anchor="middle">'
                     f'{escape_html(name)}</text><text x="{x + (width - 2 * gap) / 2}" y="40" text-anchor="middle" '
                     f'font-weight="bold">{escape_html(count)}</text>')
        if i:
            parts.append(f'<path d="M{x - 2 * gap + 2} 30 L{x - 2} 30" stroke="#333" marker-end="url(#a)"/>')
    parts.insert(1, '<defs><marker id="a" markerWidth="6" markerHeight="6" refX="5" refY="3" orient="auto">'
                    '<path d="M0,0 L6,3 L0,6 z" fill="#333"/></marker></defs>')
    return "".join(parts) + "</svg>"


def save(fig: Figure, stem, formats=("png", "svg", "pdf")) -> list[Path]:
    """Save a figure as PNG, SVG and PDF next to each other; returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        path = stem.parent / f"{stem.name}.{fmt}"  # not with_suffix: metric keys hold dots
        if fmt == "png":
            _write_png(fig, path, dpi=150)
        else:
            fig.savefig(path, metadata={"Creator": "skintrack"})
        out.append(path)
    return out


def png_bytes(fig: Figure, dpi: int = 150) -> bytes:
    """The figure as PNG bytes (for embedding)."""
    buf = io.BytesIO()
    _write_png(fig, buf, dpi)
    return buf.getvalue()


def _write_png(fig: Figure, target, dpi: float) -> None:
    """Save the figure as a PNG, drawn once. Given a layout engine, savefig draws the whole figure without
    rendering just to run it, then draws it again: running the engine here, at the PNG's dpi, and saving with
    no engine gives the same bytes (checked by the tests) for 5-14% less of a chart's PNG. A vector format
    measures text with its own renderer, so it is left to savefig."""
    engine, dpi_was = (fig.get_layout_engine() if fig.axes else None), fig.dpi
    try:
        if engine is not None:
            fig.dpi = dpi
            with contextlib.suppress(ValueError):  # as Figure.draw does: a layout that cannot be made is skipped
                engine.execute(fig)
            # no engine at all (even a placeholder makes savefig draw twice), whatever a user's rc defaults say
            with matplotlib.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
                fig.set_layout_engine(None)
        fig.savefig(target, format="png", dpi=dpi, pil_kwargs=PNG_COMPRESSION)
    finally:
        if engine is not None:
            fig.set_layout_engine(engine)
            fig.dpi = dpi_was


__all__ = ["trend_lines", "change_bars", "waterfall", "responder_bars", "score_profile", "face_regions", "map_panels",
           "qc_overview", "lsmeans_plot", "flow_diagram", "save", "png_bytes", "label", "arm_colors"]
