"""One self-contained HTML page about a dataset: what it holds, what failed, how it ran.

The page shows records and words/tokens per shard, length histograms, errors by
type and by folder, the slowest partitions (when the manifest records them), the
sources (missing and excluded inputs included) and the options. Plots are drawn
by bokeh with its JavaScript inlined, so the page opens without a network.
Everything that comes from the data (file names, error messages) is escaped.

Lengths are sampled, so a huge dataset reports in seconds: at most
``sample_shards`` shards, evenly spaced over the dataset (all of them when there
are fewer), and the first ``sample_records`` records of each. Parquet shards
give their words/tokens totals from the footer's statistics without reading
data; only the length columns of the sampled records are read. Pickle shards
are read whole, and only with ``allow_pickle=True``.

>>> import dask, dask.bag as db, dask_prep as dp, tempfile
>>> out = tempfile.mkdtemp()
>>> records = [{"text": "a b", "words": ["a", "b"]}, {"text": "c", "words": ["c"]}] * 3
>>> with dask.config.set(scheduler="sync"):
...     _ = dp.write_shards(db.from_sequence(records), out, shard_size=4, overwrite=True)
>>> page = dp.report(out)
>>> page.facts["records"], page.facts["words"], page.facts["shards"]
(6, 9, 2)
>>> page._repr_html_()[:7]  # a notebook shows the page inline
'<iframe'
"""
from __future__ import annotations

import html
import json
import logging
import os
import posixpath
from collections import Counter
from dataclasses import dataclass, field

import jinja2  # bokeh's own dependency, as is markupsafe
import numpy as np
from markupsafe import Markup

from ..errors import PickleNotAllowedError
from .shardset import open as open_dataset

__all__ = ["report", "Report", "default_report_path"]

logger = logging.getLogger(__name__)

SAMPLE_RECORDS = 1_000
SAMPLE_SHARDS = 200
MAX_ERROR_ROWS = 1_000
MAX_BARS = 25

_LABELS = {"token_ids": "tokens", "words": "words", "text": "characters"}


@dataclass(frozen=True)
class Sampling:
    """How much of the data the length statistics read (validated)."""

    records: int = SAMPLE_RECORDS
    shards: int = SAMPLE_SHARDS

    def __post_init__(self):
        for name in ("records", "shards"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"sample_{name}={value!r}: use a whole number >= 1 "
                                 f"(default {getattr(Sampling, name)})")

    def pick(self, n: int) -> list[int]:
        """Indices of the shards to sample: evenly spaced, first and last included."""
        if n <= self.shards:
            return list(range(n))
        return sorted({int(round(x)) for x in np.linspace(0, n - 1, self.shards)})


@dataclass(frozen=True)
class Report:
    """A rendered report: ``html`` (one self-contained page), ``save(path)``, and
    inline display in a notebook (``_repr_html_``). ``facts`` holds the headline
    numbers: records, shards, bytes, errors, words/tokens (exact when every shard
    was sampled) and how many records the length statistics read."""

    html: str
    title: str
    facts: dict = field(default_factory=dict, compare=False)

    def save(self, path: str | os.PathLike) -> str:
        """Write the page to ``path`` (UTF-8, via a temporary name); returns the path."""
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(self.html)
            os.replace(tmp, path)
        except OSError as exc:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise OSError(exc.errno, f"cannot write the report: {exc.strerror}", path) from None
        return path

    def _repr_html_(self) -> str:
        # An iframe keeps the page's styles and its BokehJS apart from the notebook's
        # (which may have loaded another bokeh version); sandboxed, its scripts cannot
        # reach the notebook even if something in the data escaped escaping.
        return (f'<iframe title="{html.escape(self.title)}" sandbox="allow-scripts" '
                f'style="width:100%;height:900px;border:0" srcdoc="{html.escape(self.html)}">'
                "</iframe>")

    def __repr__(self) -> str:
        return f"Report({self.title!r}, {len(self.html):,} characters of HTML)"


def report(output, path: str | os.PathLike | None = None, *, allow_pickle: bool = False,
           sample_records: int = SAMPLE_RECORDS, sample_shards: int = SAMPLE_SHARDS,
           storage_options: dict | None = None) -> Report:
    """Build the report page of the dataset in ``output`` (and save it to ``path``).

    Parameters
    ----------
    output
        A dataset folder or URL written by dask-prep.
    path
        Where to write the page; ``None`` only returns it. Display the result in
        a notebook to see it inline.
    allow_pickle
        Pickle shards are read (for the length histograms) only if this is true:
        unpickling runs code. Without it the report shows what the manifest says.
    sample_records, sample_shards
        Length statistics read at most ``sample_records`` records from each of at
        most ``sample_shards`` shards (evenly spaced).
    storage_options
        For remote datasets, as for :func:`dask_prep.open`.

    Returns
    -------
    Report
        The page (``.html``), its headline numbers (``.facts``), ``.save(path)``.
    """
    sampling = Sampling(sample_records, sample_shards)
    ds, readable = _open(output, allow_pickle, storage_options)
    facts = _gather(ds, readable, sampling)
    page = Report(_render(facts), facts["title"], _summary(facts))
    if path is not None:
        page.save(path)
    return page


def default_report_path(output) -> str:
    """``<dataset name>-report.html`` in the current folder (never inside the dataset).

    >>> default_report_path("runs/wiki-2024/")
    'wiki-2024-report.html'
    >>> default_report_path("s3://bucket/corpora/web")
    'web-report.html'
    """
    name = posixpath.basename(os.fspath(output).replace(os.sep, "/").rstrip("/"))
    if name in ("", ".", ".."):
        name = os.path.basename(os.path.abspath(os.fspath(output))) or "dataset"
    return f"{name}-report.html"


# --- reading the dataset -------------------------------------------------------

def _open(output, allow_pickle: bool, storage_options):
    """The dataset, and whether its shards may be read."""
    try:
        return open_dataset(output, allow_pickle=allow_pickle, storage_options=storage_options), True
    except PickleNotAllowedError:
        # Opening reads only the manifest (JSON); the shards are never read here, so
        # their sizes need no check either.
        return open_dataset(output, allow_pickle=True, storage_options=storage_options,
                            check=False), False


def _gather(ds, readable: bool, sampling: Sampling) -> dict:
    m = ds.manifest
    shards = list(m.get("shards") or [])
    picked = sampling.pick(len(shards)) if readable else []
    samples = [_sample_shard(ds, shards[i], i, sampling.records) for i in picked]
    logger.debug("report: sampled %d of %d shards", len(samples), len(shards))
    return {
        "title": f"dask-prep report: {_dataset_name(ds)}",
        "location": str(getattr(getattr(ds, "out", None), "url", "")),
        "manifest": m, "shards": shards, "errors": ds.errors(), "samples": samples,
        "readable": readable, "sampling": sampling,
    }


def _dataset_name(ds) -> str:
    url = str(getattr(getattr(ds, "out", None), "url", "dataset"))
    return default_report_path(url)[: -len("-report.html")]


def _sample_shard(ds, shard: dict, index: int, n: int) -> dict:
    if ds.format == "parquet":
        totals, lengths = _parquet_sample(ds, shard["file"], n)
    else:
        totals, lengths = _records_sample(ds.read_shard(index), n)
    return {"index": index, "records": shard.get("records", 0), "totals": totals,
            "lengths": lengths}


def _parquet_sample(ds, name: str, n: int):
    import pyarrow.parquet as pq
    with ds.out.fs.open(ds.out.path(name), "rb") as f:
        pf = pq.ParquetFile(f)
        columns = _length_columns(pf.schema_arrow)
        totals = {c: _footer_count(pf.metadata, c) for c, kind in columns.items() if kind == "list"}
        batch = next(pf.iter_batches(batch_size=n, columns=list(columns)), None) if columns else None
    lengths = {c: _arrow_lengths(batch.column(c), kind) for c, kind in columns.items()} if batch else {}
    return {c: t for c, t in totals.items() if t is not None}, lengths


def _length_columns(schema) -> dict:
    """Columns whose length per record means something: lists, and ``text``."""
    import pyarrow as pa
    out = {}
    for f in schema:
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type):
            out[f.name] = "list"
        elif f.name == "text" and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)):
            out[f.name] = "text"
    return out


def _footer_count(metadata, column: str) -> int | None:
    """Non-null values of a list column in a Parquet file, from its statistics alone."""
    total = 0
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        leaves = [group.column(j) for j in range(group.num_columns)
                  if group.column(j).path_in_schema.split(".")[0] == column]
        if len(leaves) != 1 or not leaves[0].is_stats_set:
            return None
        total += leaves[0].statistics.num_values
    return total


def _arrow_lengths(array, kind: str) -> np.ndarray:
    import pyarrow.compute as pc
    lengths = pc.list_value_length(array) if kind == "list" else pc.utf8_length(array)
    return lengths.drop_null().to_numpy(zero_copy_only=False).astype(np.int64)


def _records_sample(records: list, n: int):
    """Totals over the whole (already loaded) shard, lengths of its first ``n`` records."""
    columns = _record_columns(records[0]) if records else {}
    totals = {c: sum(_length(r.get(c)) for r in records) for c, k in columns.items() if k == "list"}
    lengths = {c: np.array([_length(r.get(c)) for r in records[:n] if r.get(c) is not None],
                           dtype=np.int64) for c in columns}
    return totals, lengths


def _record_columns(record) -> dict:
    if not isinstance(record, dict):
        return {}
    kinds = {c: "list" for c, v in record.items() if isinstance(v, (list, tuple, np.ndarray))}
    if isinstance(record.get("text"), str):
        kinds["text"] = "text"
    return kinds


def _length(value) -> int:
    return 0 if value is None else len(value)


# --- what the page says -----------------------------------------------------------

def _summary(facts: dict) -> dict:
    """The headline numbers (also kept on the :class:`Report` as ``facts``)."""
    m, shards = facts["manifest"], facts["shards"]
    out = {"records": m.get("total_records", 0), "shards": len(shards),
           "bytes": sum(s.get("bytes", 0) for s in shards), "errors": len(facts["errors"])}
    for column, (value, _) in _totals(facts).items():
        out[_label(column)] = value
    out["sampled_records"] = max(map(len, _lengths(facts).values()), default=0)
    return out


def _totals(facts: dict) -> dict:
    """``{column: (total, exact)}``: exact when every shard was read, else scaled up."""
    samples = [s for s in facts["samples"] if s["totals"]]
    columns = sorted({c for s in samples for c in s["totals"]})
    total_records = facts["manifest"].get("total_records", 0)
    exact = len(samples) == len(facts["shards"])
    out = {}
    for c in columns:
        have = [s for s in samples if c in s["totals"]]
        counted, records = sum(s["totals"][c] for s in have), sum(s["records"] for s in have)
        out[c] = (counted, True) if exact and len(have) == len(samples) else (
            int(round(counted / records * total_records)) if records else 0, False)
    return out


def _label(column: str) -> str:
    return _LABELS.get(column, f"{column} items")


def _lengths(facts: dict) -> dict:
    """``{column: int64 array}`` of the sampled records' lengths."""
    out = {}
    for s in facts["samples"]:
        for c, values in s["lengths"].items():
            out.setdefault(c, []).append(values)
    return {c: np.concatenate(v) for c, v in out.items() if sum(map(len, v))}


def _length_rows(lengths: dict) -> list[dict]:
    rows = []
    for c, v in lengths.items():
        q = np.percentile(v, [50, 90, 99])
        rows.append({"what": f"{_label(c)} per record ({c})", "sampled": f"{len(v):,}",
                     "min": f"{v.min():,}", "median": f"{q[0]:,.0f}", "p90": f"{q[1]:,.0f}",
                     "p99": f"{q[2]:,.0f}", "max": f"{v.max():,}", "mean": f"{v.mean():,.1f}"})
    return rows


def _folder(path: str) -> str:
    path = str(path)
    return path.rsplit("/", 1)[0] if "/" in path else "."


def _error_counts(errors: list[dict]):
    by_type = Counter(str(e.get("error", "?")) for e in errors)
    by_folder = Counter(_folder(e.get("path", "")) for e in errors)
    return by_type.most_common(MAX_BARS), by_folder.most_common(MAX_BARS)


def _common_prefix(folders: list[str]) -> str:
    if len(folders) < 2:
        return ""
    prefix = posixpath.commonpath(folders) if all(f.startswith("/") for f in folders) else ""
    return prefix if prefix not in ("", "/") else ""


def _partition_timings(m: dict) -> list[dict]:
    """Per-partition timings, if this manifest records them (slowest first)."""
    run = m.get("run") if isinstance(m.get("run"), dict) else {}
    parts = run.get("partitions", m.get("partitions"))
    if not isinstance(parts, list):
        return []
    timed = [p for p in parts if isinstance(p, dict) and isinstance(p.get("seconds"), (int, float))]
    return sorted(timed, key=lambda p: -p["seconds"])[:MAX_BARS]


def _scalars(d) -> list[tuple[str, str]]:
    if not isinstance(d, dict):
        return []
    return [(str(k), _show(v)) for k, v in d.items()]


def _show(value) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (str, float, bool)) or value is None:
        return str(value)
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 500 else text[:500] + " ..."


_SHOWN = {"version", "format", "shard_size", "total_records", "shards", "sources", "converter",
          "tokenizer", "schema", "errors", "error_types", "options", "fingerprint", "created_by",
          "run", "partitions"}


def _headline(facts: dict) -> list[tuple[str, str]]:
    m, summary = facts["manifest"], _summary(facts)
    src = m.get("sources") if isinstance(m.get("sources"), dict) else {}
    rows = [("records", f"{summary['records']:,}"),
            ("shards", f"{summary['shards']:,} of {m.get('shard_size', 0):,} records "
                       f"({m.get('format', '?')}, {summary['bytes']:,} bytes)")]
    for column, (value, exact) in _totals(facts).items():
        rows.append((_label(column), f"{value:,}" if exact else f"about {value:,} (estimated from "
                     f"{len(facts['samples'])} of {len(facts['shards'])} shards)"))
    rows += [("sources", f"{_show(src.get('count', '?'))} files, {_show(src.get('bytes', 0))} bytes" if src
              else "(written from a bag)"),
             ("errors", f"{len(facts['errors']):,}"),
             ("elapsed", _elapsed(m)), ("converter", str(m.get("converter", "-")))]
    return rows


def _elapsed(m: dict) -> str:
    run = m.get("run") if isinstance(m.get("run"), dict) else {}
    seconds = run.get("elapsed_seconds")
    return f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "-"


def _options(m: dict) -> list[tuple[str, str]]:
    rows = [(k, _show(m.get(k))) for k in ("format", "shard_size", "converter", "tokenizer",
                                            "created_by", "fingerprint") if k in m]
    rows += [(f"options.{k}", v) for k, v in _scalars(m.get("options"))]
    schema = m.get("schema") or []
    rows.append(("schema", ", ".join(f"{f.get('name')}: {f.get('type')}" for f in schema
                                     if isinstance(f, dict)) or "-"))
    return rows


def _sources(m: dict) -> dict:
    src = m.get("sources") if isinstance(m.get("sources"), dict) else {}
    excluded = src.get("excluded")
    return {"rows": [(k, v) for k, v in _scalars(src) if k not in ("missing", "excluded")],
            "missing": [str(p) for p in src.get("missing") or []],
            "excluded": [str(p) for p in excluded] if isinstance(excluded, list) else [],
            "excluded_count": len(excluded) if isinstance(excluded, list) else (excluded or 0)}


# --- plots ------------------------------------------------------------------------

_COLOR = "#3b6ea5"
_ERROR_COLOR = "#c8553d"


def _figure(title: str, **kwargs):
    from bokeh.models import LinearAxis, NumeralTickFormatter
    from bokeh.plotting import figure
    fig = figure(title=title, height=280, sizing_mode="stretch_width", toolbar_location="right",
                 tools="pan,box_zoom,reset,save,hover", **kwargs)
    fig.title.text_font_size = "13px"
    for axis in (fig.xaxis, fig.yaxis):
        if isinstance(axis[0], LinearAxis):
            axis.formatter = NumeralTickFormatter(format="0,0")  # 300,000, not 3.000e+5
    return fig


def _bars(title: str, x, y, xlabel: str, ylabel: str, tooltips):
    from bokeh.models import ColumnDataSource
    fig = _figure(title, x_axis_label=xlabel, y_axis_label=ylabel, tooltips=tooltips)
    fig.vbar(x="x", top="y", width=0.9, source=ColumnDataSource({"x": x, "y": y}), color=_COLOR)
    fig.y_range.start = 0
    return fig


def _hbars(title: str, labels: list[str], counts: list[int], tips: list[str]):
    from bokeh.models import ColumnDataSource
    fig = _figure(title, y_range=list(reversed(labels)), x_axis_label="count",
                  tooltips=[("", "@tip"), ("count", "@n")])
    fig.height = max(160, 40 + 24 * len(labels))
    fig.hbar(y="label", right="n", height=0.8, color=_ERROR_COLOR,
             source=ColumnDataSource({"label": labels, "n": counts, "tip": tips}))
    fig.x_range.start = 0
    return fig


def _histogram(column: str, values: np.ndarray):
    from bokeh.models import ColumnDataSource
    counts, edges, clipped = _bins(values)
    tail = f" (the last bar also holds the {clipped:,} longest)" if clipped else ""
    fig = _figure(f"{_label(column)} per record ({column}), {len(values):,} records sampled",
                  x_axis_label=_label(column) + tail, y_axis_label="records",
                  tooltips=[("range", "@left{0,0} - @right{0,0}"), ("records", "@top{0,0}")])
    fig.quad(bottom=0, top="top", left="left", right="right", color=_COLOR, line_color="white",
             source=ColumnDataSource({"top": counts, "left": edges[:-1], "right": edges[1:]}))
    fig.y_range.start = 0
    return fig


def _bins(values: np.ndarray, most: int = 50):
    """Histogram counts and edges: one bar per length when few, else ``most`` bars up
    to the 99th percentile, the longest 1% folded into the last (long tails stay readable).

    >>> counts, edges, clipped = _bins(np.array([1, 2, 2, 3]))
    >>> counts.tolist(), edges.tolist(), clipped
    ([1, 2, 1], [0.5, 1.5, 2.5, 3.5], 0)
    """
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < most:
        return np.bincount(values - lo, minlength=hi - lo + 1), np.arange(lo, hi + 2) - 0.5, 0
    top = int(np.ceil(np.percentile(values, 99)))
    clipped = int((values > top).sum())
    counts, edges = np.histogram(np.minimum(values, top), bins=most, range=(lo, top))
    return counts, edges, clipped


def _plots(facts: dict) -> dict:
    """``{section: [figure, ...]}``; a section without data has no plots."""
    shards = facts["shards"]
    plots = {"shards": [_bars("records per shard", list(range(len(shards))),
                              [s.get("records", 0) for s in shards], "shard", "records",
                              [("shard", "@x"), ("records", "@y{0,0}")])]} if shards else {"shards": []}
    for column in sorted({c for s in facts["samples"] for c in s["totals"]}):
        have = [s for s in facts["samples"] if column in s["totals"]]
        plots["shards"].append(_bars(
            f"{_label(column)} per shard ({column})", [s["index"] for s in have],
            [s["totals"][column] for s in have], "shard", _label(column),
            [("shard", "@x"), (_label(column), "@y{0,0}")]))
    plots["lengths"] = [_histogram(c, v) for c, v in _lengths(facts).items()]
    plots["errors"] = _error_plots(facts["errors"])
    plots["partitions"] = _partition_plots(_partition_timings(facts["manifest"]))
    return plots


def _error_plots(errors: list[dict]) -> list:
    if not errors:
        return []
    by_type, by_folder = _error_counts(errors)
    prefix = _common_prefix([f for f, _ in by_folder])
    shown = [f[len(prefix):].lstrip("/") or "." if prefix else f for f, _ in by_folder]
    return [_hbars("errors by type", [t for t, _ in by_type], [n for _, n in by_type],
                   [t for t, _ in by_type]),
            _hbars(f"errors by folder{f' (under {prefix})' if prefix else ''}", shown,
                   [n for _, n in by_folder], [f for f, _ in by_folder])]


def _partition_plots(timed: list[dict]) -> list:
    if not timed:
        return []
    return [_hbars("slowest partitions (seconds)", [f"partition {p.get('index', f'#{i}')}" for i, p in enumerate(timed)],
                   [p["seconds"] for p in timed],
                   [_show({k: v for k, v in p.items() if k != "seconds"}) for p in timed])]


# --- the page ---------------------------------------------------------------------

def _render(facts: dict) -> str:
    from bokeh.embed import components
    from bokeh.resources import Resources
    plots = _plots(facts)
    flat = {f"{section}-{i}": fig for section, figs in plots.items() for i, fig in enumerate(figs)}
    script, divs = components(flat) if flat else ("", {})
    sections = {s: [divs[f"{s}-{i}"] for i in range(len(figs))] for s, figs in plots.items()}
    return _TEMPLATE.render(
        title=facts["title"], location=facts["location"], headline=_headline(facts),
        plots=sections, plot_script=Markup(script),
        bokeh_js=Markup(
            Resources(mode="inline", components=["bokeh"]).render_js()) if flat else "",
        lengths=_length_rows(_lengths(facts)), sampling=_sampling_note(facts),
        errors=facts["errors"][:MAX_ERROR_ROWS], n_errors=len(facts["errors"]),
        manifest_errors=facts["manifest"].get("errors"), sources=_sources(facts["manifest"]),
        options=_options(facts["manifest"]), run=_scalars(facts["manifest"].get("run")),
        partitions=_partition_timings(facts["manifest"]),
        other=[(k, _show(v)) for k, v in facts["manifest"].items() if k not in _SHOWN])


def _sampling_note(facts: dict) -> str:
    if not facts["readable"]:
        return ("The shards are pickle files and were not read (unpickling runs code): pass "
                "allow_pickle=True (--allow-pickle) for length statistics, for trusted data only.")
    n, k, per = len(facts["shards"]), len(facts["samples"]), facts["sampling"].records
    which = "all shards" if k == n else f"{k} of {n} shards, evenly spaced"
    return (f"Lengths: the first {per:,} records of {which}. Words/tokens per shard: "
            + ("the Parquet footers' statistics (no data read)." if facts["manifest"].get("format")
               == "parquet" else "every record of the sampled shards."))


_TEMPLATE = jinja2.Environment(autoescape=True).from_string("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1200px;
padding:0 16px;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.where{color:#666;margin:0 0 16px;word-break:break-all} .note{color:#555;font-size:13px}
table{border-collapse:collapse;margin:6px 0 12px} td,th{padding:3px 10px;text-align:left;
vertical-align:top;border-bottom:1px solid #eee} th{background:#f6f6f6}
td.k{color:#555;white-space:nowrap} td.num{text-align:right}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:12px}
.wrap{word-break:break-all} .scroll{max-height:480px;overflow:auto}
</style>
{{ bokeh_js }}
</head><body>
<h1>{{ title }}</h1>
<p class="where">{{ location }}</p>
<table class="headline">{% for k, v in headline %}<tr><td class="k">{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>

<h2>Shards</h2>
<div class="grid">{% for d in plots.shards %}{{ d|safe }}{% endfor %}</div>
{% if not plots.shards %}<p class="note">No shards.</p>{% endif %}

<h2>Lengths</h2>
<p class="note">{{ sampling }}</p>
<div class="grid">{% for d in plots.lengths %}{{ d|safe }}{% endfor %}</div>
{% if lengths %}<table><tr><th></th><th>sampled</th><th>min</th><th>median</th><th>p90</th>
<th>p99</th><th>max</th><th>mean</th></tr>
{% for r in lengths %}<tr><td>{{ r.what }}</td><td class="num">{{ r.sampled }}</td>
<td class="num">{{ r.min }}</td><td class="num">{{ r.median }}</td><td class="num">{{ r.p90 }}</td>
<td class="num">{{ r.p99 }}</td><td class="num">{{ r.max }}</td><td class="num">{{ r.mean }}</td></tr>{% endfor %}
</table>{% endif %}

<h2>Errors ({{ "{:,}".format(n_errors) }})</h2>
{% if manifest_errors is number and manifest_errors != n_errors %}<p class="note">The manifest counts
{{ manifest_errors }} error(s); the error list holds {{ n_errors }}.</p>{% endif %}
<div class="grid">{% for d in plots.errors %}{{ d|safe }}{% endfor %}</div>
{% if errors %}<div class="scroll"><table class="errors"><tr><th>path</th><th>error</th><th>message</th><th>line</th></tr>
{% for e in errors %}<tr><td class="wrap">{{ e.path }}</td><td>{{ e.error }}</td><td class="wrap">{{ e.message }}</td>
<td class="num">{{ e.line if e.line is not none else "" }}</td></tr>{% endfor %}</table></div>
{% if n_errors > errors|length %}<p class="note">First {{ errors|length }} of {{ n_errors }} shown.</p>{% endif %}
{% else %}<p class="note">No source failed.</p>{% endif %}

<h2>Partitions</h2>
<div class="grid">{% for d in plots.partitions %}{{ d|safe }}{% endfor %}</div>
{% if partitions %}<table><tr><th>partition</th><th>seconds</th><th>details</th></tr>
{% for p in partitions %}<tr><td>{{ p.index }}</td><td class="num">{{ "%.3f"|format(p.seconds) }}</td>
<td class="wrap">{% for k, v in p.items() if k not in ("index", "seconds") %}{{ k }}: {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}</td></tr>{% endfor %}</table>
{% else %}<p class="note">This manifest records no per-partition timings.</p>{% endif %}
{% if run %}<table>{% for k, v in run %}<tr><td class="k">run.{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>{% endif %}

<h2>Sources</h2>
<table>{% for k, v in sources.rows %}<tr><td class="k">{{ k }}</td><td class="wrap">{{ v }}</td></tr>{% endfor %}
<tr><td class="k">missing</td><td>{{ sources.missing|length }}</td></tr>
<tr><td class="k">excluded</td><td>{{ sources.excluded_count }}</td></tr></table>
{% if sources.missing %}<p>Missing inputs:</p><ul class="missing">{% for p in sources.missing %}<li class="wrap">{{ p }}</li>{% endfor %}</ul>{% endif %}
{% if sources.excluded %}<p>Excluded inputs:</p><ul class="excluded">{% for p in sources.excluded %}<li class="wrap">{{ p }}</li>{% endfor %}</ul>{% endif %}

<h2>Options</h2>
<table>{% for k, v in options %}<tr><td class="k">{{ k }}</td><td class="wrap">{{ v }}</td></tr>{% endfor %}</table>
{% if other %}<p>Other manifest fields:</p>
<table>{% for k, v in other %}<tr><td class="k">{{ k }}</td><td class="wrap">{{ v }}</td></tr>{% endfor %}</table>{% endif %}
{{ plot_script }}
</body></html>
""")
