"""The report's building blocks (headings, text, tables, images) and their two renderings.

One block list is rendered twice, as Markdown and as a static HTML page, so the two can never disagree.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

MISSING = "—"  # a table cell with nothing measured behind it


@dataclass(frozen=True)
class TableCell:
    text: str
    bold: bool = False


@dataclass
class Table:
    header: list[str]
    rows: list[list[TableCell]]


Block = tuple[str, Any]  # ("h1"|"h2"|"h3"|"p", str) | ("table", Table) | ("img", (src, alt))


def render_markdown(blocks: list[Block]) -> str:
    out = []
    for kind, value in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(kind[1])} {value}")
        elif kind == "p":
            out.append(value)
        elif kind == "img":
            out.append(f"![{value[1]}]({value[0]})")
        else:
            out.append(_markdown_table(value))
    return "\n\n".join(out) + "\n"


def _markdown_table(table: Table) -> str:
    def cell(c: TableCell) -> str:
        text = c.text.replace("|", "\\|")
        return f"**{text}**" if c.bold else text

    lines = ["| " + " | ".join(cell(TableCell(h)) for h in table.header) + " |"]
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(table.header) - 1)) + "|")
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}"
    "th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}"
    "img{max-width:100%;display:block;margin:1em 0}"
)


def render_html(blocks: list[Block]) -> str:
    """A self-contained page (inline CSS, no scripts) that opens from disk anywhere."""
    body = []
    for kind, value in blocks:
        if kind in ("h1", "h2", "h3", "p"):
            body.append(f"<{kind}>{html.escape(value)}</{kind}>")
        elif kind == "img":
            body.append(f'<img src="{html.escape(value[0])}" alt="{html.escape(value[1])}">')
        else:
            body.append(_html_table(value))
    title = html.escape(next((v for k, v in blocks if k == "h1"), "report"))
    head = f'<meta charset="utf-8"><title>{title}</title><style>{_CSS}</style>'
    return f"<!DOCTYPE html>\n<html><head>{head}</head><body>\n" + "\n".join(body) + "\n</body></html>\n"


def _html_table(table: Table) -> str:
    def cell(c: TableCell) -> str:
        text = html.escape(c.text)
        return f"<td><strong>{text}</strong></td>" if c.bold else f"<td>{text}</td>"

    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in table.header) + "</tr>"
    rows = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in table.rows)
    return f"<table><thead>{head}</thead><tbody>{rows}</tbody></table>"
