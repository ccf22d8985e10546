"""report.html: the evaluation as a page a person reads (tables, notes, the audit plots)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any


def _table(rows: dict[str, Any]) -> str:
    cells = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows.items())
    return f"<table><tr><th>metric</th><th>value</th></tr>{cells}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def write_report(path: Path, title: str, result: dict[str, Any], gates: dict[str, Any] | None) -> Path:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}.fail{color:#b00}.pass{color:#070}</style>",
             f"</head><body><h1>{html.escape(title)}</h1>",
             f"<p>Reference: <code>{html.escape(result['reference'])}</code>, split "
             f"<code>{html.escape(result['split'])}</code>, modality {result['modality']}.</p>"]
    if gates is not None:
        verdict = "passed" if gates["passed"] else "REJECTED"
        parts.append(f"<h2 class='{'pass' if gates['passed'] else 'fail'}'>Quality gates: {verdict}</h2><ul>")
        parts += [f"<li class='{'pass' if r['passed'] else 'fail'}'>{html.escape(r['message'])}</li>"
                  for r in gates["results"]]
        parts.append("</ul>")
    parts += ["<h2>Summary</h2>", _table(result["summary"])]
    if result.get("notes"):
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in result["notes"]) + "</ul>")
    parts += ["<h2>Samples per class</h2>", _table(result.get("class_counts", {}))]
    for name, picture in (("Nearest real sample of the most suspicious synthetic ones", "worst_pairs.png"),
                          ("Attribute distributions, synthetic vs real", "attributes.png")):
        if (path.parent / picture).exists():
            parts.append(f"<h2>{name}</h2><img src='{picture}' style='max-width:100%'>")
    for section, values in result["details"].items():
        flat = {k: v for k, v in values.items() if not isinstance(v, (dict, list)) or len(json.dumps(v)) < 400}
        parts += [f"<h2>{html.escape(section)}</h2>", _table(flat)]
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
    return path
