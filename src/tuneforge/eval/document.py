"""The report as a document: a list of blocks, rendered to Markdown and to HTML.

A block is ``(kind, content)``: ``("h1" | "h2" | "h3", text)``, ``("verdict", text)``,
``("p", text)``, ``("table", Table)`` or ``("img", (caption, path))``. report.md and
report.html are both rendered from one block list (and the dashboard's eval view from the same
list, see :mod:`tuneforge.ui.evalview`), so they cannot drift apart.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Block", "Table", "render_html", "render_markdown"]


@dataclass
class Table:
    """A table block; ``numeric`` holds the indices of right-aligned (number) columns."""

    headers: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)


Block = tuple[str, Any]


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", " ⏎ ")


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return path.as_posix()


def render_markdown(blocks: list[Block], out_dir: Path) -> str:
    """Markdown for the blocks; images are linked relative to ``out_dir``."""
    out: list[str] = []
    for kind, content in blocks:
        if kind in {"h1", "h2", "h3"}:
            out += ["#" * int(kind[1]) + " " + content, ""]
        elif kind == "verdict":
            out += [f"**Verdict:** {content}", ""]
        elif kind == "p":
            out += [content, ""]
        elif kind == "table":
            table: Table = content
            out.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
            out.append(
                "|"
                + "|".join(
                    "---:" if i in table.numeric else "---" for i in range(len(table.headers))
                )
                + "|"
            )
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
            out.append("")
        elif kind == "img":
            name, path = content
            out += [f"![{name}]({_relative(path, out_dir)})", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #1b1b1b; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.verdict { font-size: 1.15em; background: #f3f7fc; border-left: 5px solid #4c72b0;
           padding: 0.8em 1em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #d8d8d8; padding: 0.3em 0.6em; vertical-align: top; text-align: left;
         white-space: pre-wrap; }
th { background: #f4f4f4; } tr:nth-child(even) td { background: #fbfbfb; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
"""

_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def render_html(blocks: list[Block], title: str) -> str:
    """Self-contained HTML for the blocks: inline CSS, images as base64 data URIs."""
    esc = html.escape
    body: list[str] = []
    for kind, content in blocks:
        if kind in {"h1", "h2", "h3"}:
            body.append(f"<{kind}>{esc(content)}</{kind}>")
        elif kind == "verdict":
            body.append(f'<p class="verdict"><strong>Verdict:</strong> {esc(content)}</p>')
        elif kind == "p":
            body.append(f"<p>{esc(content)}</p>")
        elif kind == "table":
            table: Table = content

            def cls(i: int, t: Table = table) -> str:
                return ' class="num"' if i in t.numeric else ""

            head = "".join(f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(table.headers))
            rows = "".join(
                "<tr>" + "".join(f"<td{cls(i)}>{esc(c)}</td>" for i, c in enumerate(row)) + "</tr>"
                for row in table.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            name, path = content
            if path.is_file():
                mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                body.append(
                    f'<figure><img alt="{esc(name)}" src="data:{mime};base64,{data}">'
                    f"<figcaption>{esc(name)}</figcaption></figure>"
                )
            else:
                body.append(f"<p>(figure {esc(name)} missing: {esc(str(path))})</p>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
