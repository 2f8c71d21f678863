"""A run's eval report as an HTML fragment of the run page.

The content comes from `tuneforge.eval.report`'s own block list (the one report.md and
report.html are rendered from), so the dashboard shows exactly what the report says: verdict,
variants (the three-way table), paired comparisons, per-class scores, confusion matrices,
top confusions, flipped and worst examples, perplexity, forgetting. Only the rendering differs:
figures are linked (served from the eval directory) instead of embedded as base64.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from markupsafe import Markup

_HEADINGS = {"h2": "h3", "h3": "h4"}  # the fragment sits under the page's own "Evaluation" h2


def eval_fragment(
    results: Mapping[str, Any], plots: Mapping[str, Path], image_url: Callable[[Path], str]
) -> Markup:
    """HTML for `results` (eval/metrics.json) with `plots` ({caption: PNG}) linked by `image_url`.

    A metrics.json the report code cannot read (hand-edited, from an older version) gives a
    short note rather than an error.
    """
    # The same block list report.md and report.html are rendered from, so the dashboard cannot
    # drift from them.
    from tuneforge.eval.report import build_blocks

    try:
        blocks = build_blocks(results, dict(plots))
    except Exception as exc:  # malformed results: say so on the page, never a 500
        return Markup(
            '<p class="note">The eval report could not be read '
            f"({html.escape(type(exc).__name__)}: {html.escape(str(exc)[:200])}); "
            "re-run <code>tuneforge eval</code> to regenerate it.</p>"
        )
    esc = html.escape
    out: list[str] = []
    for kind, content in blocks:
        if kind == "h1":
            continue
        if kind in _HEADINGS:
            tag = _HEADINGS[kind]
            out.append(f"<{tag}>{esc(content)}</{tag}>")
        elif kind == "verdict":
            out.append(f'<p class="verdict"><strong>Verdict:</strong> {esc(content)}</p>')
        elif kind == "p":
            out.append(f"<p>{esc(content)}</p>")
        elif kind == "table":
            numeric = content.numeric

            def cell(tag: str, i: int, text: str, numeric: set[int] = numeric) -> str:
                cls = ' class="num"' if i in numeric else ""
                return f"<{tag}{cls}>{esc(text)}</{tag}>"

            head = "".join(cell("th", i, h) for i, h in enumerate(content.headers))
            rows = "".join(
                "<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>"
                for row in content.rows
            )
            out.append(
                '<div class="scroll"><table class="report">'
                f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
            )
        elif kind == "img":
            name, path = content
            out.append(
                f'<figure class="eval-figure" data-name="{esc(name)}">'
                f'<img alt="{esc(name)}" src="{esc(image_url(Path(path)))}" loading="lazy">'
                f"<figcaption>{esc(name.replace('_', ' '))}</figcaption></figure>"
            )
    return Markup("\n".join(out))
