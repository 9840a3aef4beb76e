"""Small HTML building blocks of the report: escaped text, tables, embedded PNGs, sections."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["esc", "img", "table", "kv_table", "flatten", "section", "page", "fmt"]

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1f3a5f;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85;font-size:13px}
nav{background:#fff;border-bottom:1px solid #dde1e7;padding:8px 32px;font-size:13px;position:sticky;top:0}
nav a{margin-right:14px;color:#1f3a5f;text-decoration:none}
main{padding:8px 32px 40px;max-width:1300px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin:18px 0;padding:14px 20px}
h2{font-size:17px;margin:4px 0 10px;color:#1f3a5f}h3{font-size:14px;margin:14px 0 6px}
img{max-width:100%;height:auto;display:block;margin:8px 0}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0;display:block;overflow-x:auto;max-width:100%}
td,th{border:1px solid #dde1e7;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#5a6372;font-size:12.5px}.warn{color:#9a3b00;font-size:12.5px}
pre{background:#f0f2f5;padding:8px;font-size:11.5px;overflow:auto;max-height:360px}
"""


def esc(text: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(text), quote=True)


def fmt(v: Any) -> str:
    """A value as short text: floats to 4 significant digits."""
    if isinstance(v, bool) or v is None:
        return "—" if v is None else str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "—"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)) and len(v) <= 6 and all(isinstance(x, (int, float)) for x in v):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


def img(data: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG embedded as base64."""
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *, labels: Mapping[str, str] | None = None) -> str:
    """A table with one row per mapping."""
    if not rows:
        return ""
    cols = list(columns or dict.fromkeys(k for r in rows for k in r))
    labels = labels or {}
    head = "".join(f"<th>{esc(labels.get(c, c))}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cls = ' class="n"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{esc(fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def flatten(d: Mapping[str, Any], prefix: str = "", *, max_list: int = 6) -> list[tuple[str, Any]]:
    """Nested dict to (dotted key, value) pairs; long lists are summarised."""
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.extend(flatten(v, key + ".", max_list=max_list))
        elif isinstance(v, (list, tuple)) and len(v) > max_list:
            out.append((key, f"{len(v)} values"))
        else:
            out.append((key, v))
    return out


def kv_table(d: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str:
    """A two-column key / value table."""
    items = flatten(d) if isinstance(d, Mapping) else list(d)
    cells = []
    for k, v in items:
        cls = ' class="n"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
        cells.append(f"<tr><th>{esc(k)}</th><td{cls}>{esc(fmt(v))}</td></tr>")
    rows = "".join(cells)
    return f"<table>{rows}</table>"


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole page: header, navigation, the (anchor, title, html) sections."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    body = "".join(section(a, t, h) for a, t, h in sections)
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><nav>{nav}</nav><main>{body}</main></body></html>"
    )


def pre_json(data: Any) -> str:
    return f"<pre>{esc(json.dumps(data, indent=1, default=str))}</pre>"
