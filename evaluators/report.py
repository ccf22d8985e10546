"""report.html: the evaluation as a page a person reads: verdict, flags, samples, metrics, audit plots.

One static file: pictures are embedded as data: URIs and the style is inline, so the report can be
mailed or attached as an artifact and opened offline (no JS, no CDN). Every string is escaped.
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path
from typing import Any

# Pictures the evaluators write into eval/, with the heading they get; any other PNG there is shown
# under its file name.
PLOTS = {"worst_pairs.png": "Nearest real sample of the most suspicious synthetic ones",
         "attributes.png": "Attribute distributions, synthetic vs real",
         "augment.png": "Does synthetic data help? Accuracy vs synthetic:real ratio"}
# How to read the summary metrics (direction and meaning), for the summary table's third column: each
# evaluator declares its own (`Evaluator.metrics`); the runner adds the per-class count.
CORE_HELP = {"min_class_count": "samples in the smallest class"}
# Headline evaluators first in the summary; any other registered evaluator follows, by name.
FIRST = ("fidelity", "cas", "augment", "memorization", "diversity", "attributes", "labels", "clip_score")


def metric_help() -> dict[str, str]:
    """metric -> meaning, in display order, from every registered evaluator."""
    from synthloom.registry import evaluator_classes

    classes = evaluator_classes()
    order = [k for k in FIRST if k in classes] + sorted(set(classes) - set(FIRST))
    help_texts: dict[str, str] = {}
    for kind in order:
        help_texts.update(getattr(classes[kind], "metrics", {}))
    extractor = help_texts.pop("extractor", None)  # a label, not a number: last
    help_texts.update(CORE_HELP)
    if extractor:
        help_texts["extractor"] = extractor
    return help_texts


# The number that explains a raised flag, shown beside it (flag_mode_collapse: the collapsed classes).
FLAG_DETAIL = {"flag_memorization": ("near_copy_fraction",), "flag_data_copying": ("data_copying_z",),
               "flag_duplicates": ("near_duplicate_rate",), "flag_mode_collapse": ("mode_collapse",),
               "flagged": ("shifted", "overly_consistent")}  # the attribute audit's flag
MAX_ROWS = 12  # rows shown of a long list (worst pairs); the manifest keeps all of them

STYLE = """
body{font-family:system-ui,sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{margin:1.2em 0 .4em}.meta{color:#555;margin-top:0}
table{border-collapse:collapse;margin:.3em 0}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
td table{margin:0;font-size:.85em}.help{color:#666;font-size:.9em}
.banner{padding:.5em 1em;border-radius:4px;font-weight:600;margin:1em 0}
.banner.pass{background:#e6f4e6;color:#075e07;border:1px solid #9c9}
.banner.fail{background:#fbe9e9;color:#a00;border:1px solid #d99}
tr.fail td,td.flag{background:#fbe9e9;color:#a00;font-weight:600}tr.pass td.verdict{color:#075e07;font-weight:600}
img{max-width:100%;border:1px solid #ddd}img.small{image-rendering:pixelated}
.wide{overflow-x:auto}code{background:#f4f4f4;padding:0 3px}
"""


def fmt(value: Any) -> str:
    """A scalar as text: floats to 4 significant digits, integers as integers, booleans as yes/no."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _raised(key: str, value: Any) -> bool:
    """A flag that is up: `flag_*` true, or a non-empty mode-collapse / overly-consistent result."""
    if key.startswith("flag_") or key in ("flagged", "mode_collapse", "overly_consistent", "warnings"):
        return bool(value)
    return False


def _td(value: Any, key: str = "") -> str:
    """A cell of a grid: numbers right-aligned so their digits line up, raised flags highlighted."""
    cls = " class='flag'" if _raised(key, value) else (" class='num'" if isinstance(value, (int, float))
                                                       and not isinstance(value, bool) else "")
    return f"<td{cls}>{_value(value, key)}</td>"


def _head(text: Any) -> str:
    """A column heading that may wrap after `_` and `.` (long metric names would widen the table)."""
    return html.escape(str(text)).replace("_", "_<wbr>").replace(".", ".<wbr>")


def _ordered(values: dict[str, Any]) -> dict[str, Any]:
    """Quantile dicts in numeric order (q00, q01, ..., q100), not the manifest's sorted-string order."""
    if values and all(re.fullmatch(r"q\d+", str(k)) for k in values):
        return dict(sorted(values.items(), key=lambda item: int(item[0][1:])))
    return values


def _value(value: Any, key: str = "", classes: list[str] | None = None) -> str:
    """Any JSON value as HTML: scalars as text, lists as text or a table, dicts as nested tables."""
    if _is_scalar(value):
        return html.escape(fmt(value))
    if isinstance(value, list):
        if key.endswith("_per_class"):  # by label index
            names = classes if classes and len(classes) == len(value) else [f"class {i}" for i in range(len(value))]
            return _table(dict(zip(names, value)), ("class", "value"))
        if not value:
            return "none"
        if all(isinstance(v, str) for v in value) and max(map(len, value)) > 40:  # sentences: one a line
            return "<ul>" + "".join(f"<li>{html.escape(v)}</li>" for v in value) + "</ul>"
        if all(_is_scalar(v) for v in value):
            return html.escape(", ".join(fmt(v) for v in value))
        if all(isinstance(v, dict) for v in value):
            return _records(value)
        return "<br>".join(_value(v) for v in value)
    if isinstance(value, dict):
        if key.endswith("_per_class"):
            return _table(value, ("class", "value"))
        value = _ordered(value)
        if value and all(isinstance(v, dict) for v in value.values()):
            return _grid(value)
        if value and all(_is_scalar(v) for v in value.values()) and len(value) <= 12 and \
                all(len(str(k)) <= 12 for k in value):
            head = "".join(f"<th>{_head(k)}</th>" for k in value)
            return f"<table><tr>{head}</tr><tr>{''.join(_td(v, str(k)) for k, v in value.items())}</tr></table>"
        return _table(value)
    return html.escape(str(value))


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _grid(rows: dict[str, dict]) -> str:
    """{row: {column: value}} (nested dicts flattened to `a.b` columns) as one table; many fields of
    few rows are turned a quarter, one row a column, so the table stays on the page."""
    flat = {name: _flatten(record) for name, record in rows.items()}
    fields = list(dict.fromkeys(c for record in flat.values() for c in record))
    if len(fields) > 8 and len(fields) > len(flat):
        head = "<th></th>" + "".join(f"<th>{_head(name)}</th>" for name in flat)
        body = "".join(f"<tr><th>{html.escape(field)}</th>" + "".join(_td(record.get(field), field)
                                                                       for record in flat.values()) + "</tr>"
                       for field in fields)
    else:
        head = "<th></th>" + "".join(f"<th>{_head(field)}</th>" for field in fields)
        body = "".join(f"<tr><th>{html.escape(str(name))}</th>" + "".join(_td(record.get(f), f) for f in fields)
                       + "</tr>" for name, record in flat.items())
    return f"<table><tr>{head}</tr>{body}</table>"


def _records(items: list[dict]) -> str:
    columns = list(dict.fromkeys(c for item in items for c in item))
    head = "".join(f"<th>{_head(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_td(item.get(c), c) for c in columns) + "</tr>" for item in items[:MAX_ROWS])
    more = (f"<tr><td colspan='{len(columns)}'>… {len(items) - MAX_ROWS} more in manifest.json</td></tr>"
            if len(items) > MAX_ROWS else "")
    return f"<table><tr>{head}</tr>{body}{more}</table>"


def _table(rows: dict[str, Any], header: tuple[str, ...] = ("metric", "value"), classes: list[str] | None = None,
           help_texts: dict[str, str] | None = None, failing: set[str] = frozenset()) -> str:
    """A key/value table; rows named in `failing` (metrics of failed gates) are highlighted."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = []
    for k, v in rows.items():
        cls = " class='flag'" if _raised(str(k), v) else ""
        extra = f"<td class='help'>{html.escape(help_texts.get(str(k), ''))}</td>" if help_texts is not None else ""
        row = " class='fail'" if k in failing else ""
        body.append(f"<tr{row}><td>{html.escape(str(k))}</td><td{cls}>{_value(v, str(k), classes)}</td>{extra}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _image(path: Path, alt: str) -> str:
    """A PNG as an <img> with a data: URI; tiny pictures are scaled up without blurring."""
    from PIL import Image

    data = path.read_bytes()
    with Image.open(path) as picture:
        width = picture.width
    scale = " class='small'" if width < 400 else ""
    style = f" style='width:{min(4 * width, 640)}px'" if width < 400 else ""
    return (f"<img alt='{html.escape(alt, quote=True)}'{scale}{style} "
            f"src='data:image/png;base64,{base64.b64encode(data).decode()}'>")


def _gates(gates: dict[str, Any]) -> list[str]:
    verdict = "passed" if gates["passed"] else "REJECTED"
    failed = [r for r in gates["results"] if not r["passed"]]
    banner = (f"Quality gates: {verdict}" + (f" ({len(failed)} of {len(gates['results'])} failed)" if failed else ""))
    rows = []
    for r in gates["results"]:
        state = "pass" if r["passed"] else "fail"
        must = f"{r['op']} {fmt(r['threshold'])}"
        value = "not computed" if r["value"] is None else fmt(r["value"])
        rows.append(f"<tr class='{state}'><td>{html.escape(r['gate'])}</td><td>{html.escape(r['metric'])}</td>"
                    f"<td class='num'>{html.escape(value)}</td><td>{html.escape(must)}</td>"
                    f"<td class='verdict'>{'PASS' if r['passed'] else 'FAIL'}</td></tr>")
    return [f"<div class='banner {'pass' if gates['passed'] else 'fail'}'>{html.escape(banner)}</div>",
            "<table><tr><th>gate</th><th>metric</th><th>value</th><th>must be</th><th>result</th></tr>"
            + "".join(rows) + "</table>"]


def _flags(result: dict[str, Any]) -> list[str]:
    """Every flag the evaluators report, raised ones first and highlighted, each raised one with the
    number behind it (FLAG_DETAIL)."""
    flags: list[tuple[str, bool, Any]] = []
    for section, values in result.get("details", {}).items():
        for key, value in values.items():
            if key.startswith("flag_") or key == "flagged":
                shown = "; ".join(f"{html.escape(k)}: {_value(values[k])}" for k in FLAG_DETAIL.get(key, ())
                                  if value and k in values)
                flags.append((f"{section}: {key}", bool(value), shown or None))
            elif key == "warnings":
                flags.append((f"{section}: {key}", bool(value), _value(value) if value else None))
    if not flags:
        return []
    flags.sort(key=lambda item: not item[1])
    up = sum(raised for _, raised, _ in flags)
    banner = f"{up} flag{'s' if up != 1 else ''} raised" if up else "No flags raised"
    details = any(detail for _, _, detail in flags)  # a detail column only when a raised flag has one
    rows = "".join(f"<tr class='{'fail' if raised else 'pass'}'><td>{html.escape(name)}</td>"
                   f"<td>{'RAISED' if raised else 'no'}</td>" + (f"<td>{detail or ''}</td>" if details else "")
                   + "</tr>" for name, raised, detail in flags)
    head = "<tr><th>flag</th><th>raised</th>" + ("<th>detail</th>" if details else "") + "</tr>"
    return ["<h2>Flags</h2>", f"<div class='banner {'fail' if up else 'pass'}'>{html.escape(banner)}</div>",
            f"<table>{head}{rows}</table>"]


def write_report(path: Path, title: str, result: dict[str, Any], gates: dict[str, Any] | None,
                 classes: list[str] | None = None, preview: Path | None = None) -> Path:
    """Write the report. `classes` (the dataset's class names, by label index) name the rows of
    per-class lists; `preview` is the version's sample grid (preview.png)."""
    path = Path(path)
    evaluated = f", evaluated {html.escape(str(result['evaluated_at']))}" if result.get("evaluated_at") else ""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class='meta'>Reference <code>{html.escape(str(result['reference']))}</code>, split "
             f"<code>{html.escape(str(result['split']))}</code>, modality {html.escape(str(result['modality']))}, "
             f"evaluators {html.escape(', '.join(result.get('evaluators', [])) or 'none')}{evaluated}.</p>"]
    if gates is not None:
        parts += _gates(gates)
    parts += _flags(result)
    if preview is not None and Path(preview).exists():
        parts += ["<h2>Samples</h2>", _image(Path(preview), "sample grid (preview.png)")]
    help_texts = metric_help()
    order = list(help_texts)  # headline metrics first, in the evaluators' order (the manifest sorts keys by name)
    summary = dict(sorted(result["summary"].items(),
                          key=lambda item: order.index(item[0]) if item[0] in order else len(order)))
    failing = {r["metric"] for r in (gates or {}).get("results", []) if not r["passed"]}
    parts += ["<h2>Summary</h2>", _table(summary, ("metric", "value", "meaning"), help_texts=help_texts, failing=failing)]
    if result.get("notes"):
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in result["notes"]) + "</ul>")
    for name, rows in (result.get("tables") or {}).items():
        parts += [f"<h2>Table: {html.escape(name)}</h2>", f"<div class='wide'>{_records(rows)}</div>"]
    if result.get("class_counts"):
        parts += ["<h2>Samples per class</h2>", _table(result["class_counts"], ("class", "samples"))]
    pictures = sorted(path.parent.glob("*.png"), key=lambda p: (p.name not in PLOTS, list(PLOTS).index(p.name)
                                                                 if p.name in PLOTS else 0, p.name))
    for picture in pictures:
        name = PLOTS.get(picture.name, picture.name)
        parts += [f"<h2>{html.escape(name)}</h2>", _image(picture, name)]
    for section, values in result["details"].items():
        parts += [f"<h2>Details: {html.escape(section)}</h2>",
                  f"<div class='wide'>{_table(values, classes=classes)}</div>"]
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
    return path
