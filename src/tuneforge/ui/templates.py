"""The dashboard's pages as Jinja2 templates (autoescaped) and the filters they format with.

They live in a Python module rather than template files so they ship with the package without
package-data rules, and nothing is fetched by the browser from anywhere but this server.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import jinja2

from tuneforge.ui.assets import CSS

LAYOUT = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}tuneforge{% endblock %} · tuneforge ui</title>{% block head %}{% endblock %}
<style>{{ css }}</style></head>
<body>
<header><a class="brand" href="/">tuneforge</a>
<nav><a href="/" class="{{ 'on' if page == 'runs' }}">Runs</a>
<a href="/compare" class="{{ 'on' if page == 'compare' }}">Compare</a>
<a href="/playground" class="{{ 'on' if page == 'playground' }}">Playground</a></nav>
<span class="where">runs from {{ root }}</span></header>
<main>{% block main %}{% endblock %}</main>
</body></html>
"""

RUNS = """{% extends "layout" %}{% block title %}Runs{% endblock %}
{% macro sortable(key, label, numeric=False) -%}
<th{{ ' class=num' if numeric }}><a class="sort" href="?sort={{ key }}&amp;desc={{ 0 if sort == key and desc else 1 }}">
{{- label }}{% if sort == key %} {{ '▼' if desc else '▲' }}{% endif %}</a></th>
{%- endmacro %}
{% block main %}
<h1>Runs <span class="muted">({{ runs|length }})</span></h1>
{% if not runs %}
<p class="empty">No runs in {{ root }} yet. Train one with
<code>tuneforge train CONFIG data.dir=DATA -o {{ root }}/NAME</code>, or start the dashboard on
another directory: <code>tuneforge ui --runs DIR</code>.</p>
{% else %}
<form method="get" action="/compare" id="runs-form">
<p class="muted">Click a run for its curves and eval report; tick two or more and
<button type="submit">Compare selected</button></p>
<div class="scroll"><table id="runs">
<thead><tr><th></th>{{ sortable('name', 'run') }}{{ sortable('model', 'model') }}
{{ sortable('method', 'method') }}{{ sortable('date', 'finished') }}
{{ sortable('steps', 'steps', True) }}{{ sortable('train_loss', 'train loss', True) }}
{{ sortable('val_loss', 'val loss (best)', True) }}{{ sortable('metric', 'tuned score (95 % CI)', True) }}
<th class="num">best baseline</th>{{ sortable('wall', 'wall time', True) }}
{{ sortable('memory', 'peak memory', True) }}</tr></thead>
<tbody>
{% for r in runs %}
<tr class="run{{ ' problem' if r.notes }}" data-run="{{ r.name }}">
<td><input type="checkbox" name="run" value="{{ r.name }}" aria-label="compare {{ r.name }}"></td>
<td><a href="/runs/{{ r.name|urlencode }}">{{ r.name }}</a>
{% for n in r.notes %}<div class="note">{{ n }}</div>{% endfor %}</td>
<td title="{{ r.model or '' }}">{{ r.model|shortmodel }}</td><td>{{ r.method or '–' }}</td>
<td class="num">{{ r.finished_at|date }}</td><td class="num">{{ r.steps|intf }}</td>
<td class="num">{{ r.final_train_loss|loss }}</td><td class="num">{{ r.val_loss|loss }}</td>
<td class="num">{% if r.eval %}{{ r.eval.metric_name }} {{ r.eval.tuned|pct }}
{%- if r.eval.tuned_ci %} ({{ r.eval.tuned_ci|ci }}){% endif %}{% else %}<span class="muted">not evaluated</span>{% endif %}</td>
<td class="num">{% if r.eval and r.eval.best_baseline %}{{ r.eval.best_baseline }} {{ r.eval.best_value|pct }}{% else %}–{% endif %}</td>
<td class="num">{{ r.wall_seconds|duration }}</td>
<td class="num">{{ r.peak_memory|bytes }}{% if r.peak_memory_kind == 'cuda_allocated' %} GPU{% endif %}</td>
</tr>
{% endfor %}
</tbody></table></div></form>
{% endif %}
{% if compares %}<h2>Comparison summaries (<code>tuneforge compare</code>)</h2><ul>
{% for c in compares %}<li><a href="/compare/summary/{{ c|urlencode }}">{{ c }}</a></li>{% endfor %}
</ul>{% endif %}
{% if skipped %}<p class="muted">Other directories here (not runs): {{ skipped|join(', ') }}</p>{% endif %}
{% endblock %}
"""

RUN = """{% extends "layout" %}{% block title %}{{ r.name }}{% endblock %}
{% block head %}{% if refresh %}<meta http-equiv="refresh" content="{{ refresh }}">{% endif %}{% endblock %}
{% block main %}
<h1>{{ r.name }} {% if r.status != 'finished' %}<span class="muted">({{ r.status }})</span>{% endif %}</h1>
{% for n in r.notes %}<p class="note">{{ n }}</p>{% endfor %}
{% if refresh %}<p class="muted" id="live">Training in progress: this page reloads every {{ refresh }} s.</p>{% endif %}
<div class="facts">
<div><span>model</span>{{ r.model or '–' }}</div><div><span>method</span>{{ r.method or '–' }}</div>
<div><span>weights</span>{{ r.weights or 'none yet' }}</div>
<div><span>steps</span>{{ r.steps|intf }}</div>
<div><span>final train loss</span>{{ r.final_train_loss|loss }}</div>
<div><span>best val loss</span>{{ r.val_loss|loss }}</div>
<div><span>trainable</span>{{ r.trainable|intf }} of {{ r.total_params|intf }}</div>
<div><span>wall time</span>{{ r.wall_seconds|duration }}</div>
<div><span>peak memory</span>{{ r.peak_memory|bytes }}</div>
<div><span>finished</span>{{ r.finished_at|date }}</div>
</div>
<p>{% if r.servable %}<a href="/playground?adapter={{ r.name|urlencode }}">Try it in the playground</a> · {% endif %}
<a href="/compare?run={{ r.name|urlencode }}">Compare with other runs</a></p>
<h2>Training curves</h2>
<div class="charts" id="curves">{{ loss_chart }}{{ lr_chart }}</div>
{% if not d.curves and d.has_loss_png %}<figure><img id="loss-png" alt="loss.png" src="/runs/{{ r.name|urlencode }}/file/loss.png"></figure>{% endif %}
<h2 id="eval">Evaluation</h2>
{% if eval_html %}
<p class="muted">From <code>eval/metrics.json</code>{% if d.has_report_html %} · <a href="/runs/{{ r.name|urlencode }}/file/eval/report.html">the full report.html</a>{% endif %}</p>
{{ eval_html }}
{% else %}
<p class="empty">Not evaluated yet: <code>tuneforge eval {{ r.path }}</code> writes its report
(tuned vs base model prompting vs a classic classifier) into <code>{{ r.path }}/eval</code>.</p>
{% endif %}
<h2>Manifest</h2>
{% if manifest_text %}<details><summary>manifest.json: data, parameters, environment</summary><pre id="manifest">{{ manifest_text }}</pre></details>
{% else %}<p class="empty">No manifest.json.</p>{% endif %}
<h2>Config</h2>
{% if d.config_text %}<details><summary>config.yaml</summary><pre id="config">{{ d.config_text }}</pre></details>
{% else %}<p class="empty">No config.yaml.</p>{% endif %}
{% endblock %}
"""

COMPARE = """{% extends "layout" %}{% block title %}Compare{% endblock %}
{% block main %}
<h1>Compare runs</h1>
{% for n in notes %}<p class="note">{{ n }}</p>{% endfor %}
<form method="get" action="/compare"><p class="muted">Runs to compare:
{% for name in all_runs %}<label><input type="checkbox" name="run" value="{{ name }}"
{{ 'checked' if name in selected }}> {{ name }}</label> {% endfor %}
<button type="submit">Compare</button></p></form>
{% if details|length < 2 %}
<p class="empty">Pick at least two runs.</p>
{% else %}
<div class="scroll"><table id="compare-table">
<thead><tr><th></th>{% for d in details %}<th><a href="/runs/{{ d.summary.name|urlencode }}">{{ d.summary.name }}</a></th>{% endfor %}</tr></thead>
<tbody>{% for label, cells in rows %}<tr><th>{{ label }}</th>{% for c in cells %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</tbody>
</table></div>
<h2>Curves</h2>
<div class="charts" id="curves">{{ loss_chart }}{{ lr_chart }}</div>
<h2>Config differences</h2>
{% if diff %}<div class="scroll"><table id="config-diff"><thead><tr><th>key</th>
{% for d in details %}<th>{{ d.summary.name }}</th>{% endfor %}</tr></thead><tbody>
{% for key, values in diff %}<tr><th><code>{{ key }}</code></th>{% for v in values %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}
</tbody></table></div>{% else %}<p class="muted">The configs are identical.</p>{% endif %}
{% endif %}
{% if compares %}<h2>Comparison summaries (<code>tuneforge compare</code>)</h2><ul>
{% for c in compares %}<li><a href="/compare/summary/{{ c|urlencode }}">{{ c }}</a></li>{% endfor %}</ul>{% endif %}
{% endblock %}
"""

SUMMARY = """{% extends "layout" %}{% block title %}{{ s.name }}{% endblock %}
{% block main %}
<h1>Comparison summary: {{ s.name }}</h1>
{% for n in s.notes %}<p class="note">{{ n }}</p>{% endfor %}
{% if verdict %}<p class="verdict" id="summary-verdict">{{ verdict }}</p>{% endif %}
{% if elsewhere %}<p class="muted">Its runs are in <code>{{ s.path }}/runs</code>: see them with
<code>tuneforge ui --runs {{ s.path }}</code>.</p>{% endif %}
{% if s.runs|length >= 2 %}<p><a href="/compare?runs={{ s.runs|join(',')|urlencode }}">Open these runs side by side</a> ({{ s.runs|join(', ') }})</p>{% endif %}
{% for key, table in tables %}<h2>{{ key }}</h2>{{ table }}{% endfor %}
<div class="figures">{% for img in s.images %}<figure class="eval-figure"><img alt="{{ img }}" src="/compare/summary/{{ s.name|urlencode }}/file/{{ img|urlencode }}"><figcaption>{{ img }}</figcaption></figure>{% endfor %}</div>
{% if s.data is not none %}<h2>summary.json</h2><div id="summary-json">{{ data_html }}</div>{% endif %}
{% if s.markdown %}<h2>summary.md</h2><pre id="summary-md">{{ s.markdown }}</pre>{% endif %}
{% if s.data is none and not s.markdown %}<p class="empty">Nothing readable in {{ s.path }}.</p>{% endif %}
{% endblock %}
"""

PLAYGROUND = """{% extends "layout" %}{% block title %}Playground{% endblock %}
{% block main %}
<h1>Playground</h1>
<p class="muted">The same prompt goes to the base model and to the fine-tuned adapter, through
{{ description }}. Greedy decoding by default (temperature 0), so differences come from the
fine-tune, not from sampling.</p>
{% if error %}<p class="note" id="pg-error">{{ error }}</p>{% endif %}
{% set usable = choices|rejectattr('reason')|list %}
{% if not usable %}
<p class="empty">No adapter to try: the playground serves LoRA, QLoRA and DoRA runs beside
their base model.</p>
{% else %}
<form class="pg-form" id="pg-form">
<label for="adapter">Adapter</label>
<select id="adapter" name="adapter">
{% for c in usable %}<option value="{{ c.name }}" data-system="{{ c.system or '' }}" data-example="{{ c.example or '' }}"
{{ 'selected' if c.name == selected }}>{{ c.name }}{% if c.base %} (on {{ c.base|shortmodel }}){% endif %}</option>{% endfor %}
</select>
<label for="system">System prompt <span class="muted">(prefilled with the one the run was trained with)</span></label>
<textarea id="system" name="system" rows="2"></textarea>
<label for="prompt">Prompt</label>
<textarea id="prompt" name="prompt" rows="4" placeholder="Type a message"></textarea>
<div class="row">
<div><label for="max_tokens">Max new tokens</label><input id="max_tokens" type="number" min="1" max="1024" value="128"></div>
<div><label for="temperature">Temperature</label><input id="temperature" type="number" min="0" max="2" step="0.1" value="0"></div>
<div><button id="send" type="submit">Send to both</button> <span id="status" class="muted"></span></div>
</div>
</form>
<div class="answers">
<div class="answer" id="answer-base"><h3>Base model</h3><div class="text"></div><div class="meta"></div></div>
<div class="answer" id="answer-adapter"><h3>Adapter: <span class="name"></span></h3><div class="text"></div><div class="meta"></div></div>
</div>
{% endif %}
{% set unusable = choices|selectattr('reason')|list %}
{% if unusable %}<details><summary>Runs the playground cannot serve ({{ unusable|length }})</summary><ul>
{% for c in unusable %}<li>{{ c.name }}: {{ c.reason }}</li>{% endfor %}</ul></details>{% endif %}
<script>{{ script }}</script>
{% endblock %}
"""


ERROR = """{% extends "layout" %}{% block title %}{{ title }}{% endblock %}
{% block main %}<h1>{{ title }}</h1><p>{{ message }}</p><p><a href="/">Back to the runs</a></p>{% endblock %}
"""


# --------------------------------------------------------------------------- filters


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def pct(value: Any) -> str:
    v = _finite(value)
    return "–" if v is None else f"{100 * v:.1f} %"


def ci(interval: Any) -> str:
    if not interval:
        return ""
    lo, hi = interval
    return f"{100 * lo:.1f}–{100 * hi:.1f}"


def loss(value: Any) -> str:
    v = _finite(value)
    return "–" if v is None else f"{v:.4f}"


def duration(value: Any) -> str:
    v = _finite(value)
    if v is None:
        return "–"
    if v < 60:
        return f"{v:.1f} s"
    minutes, seconds = divmod(round(v), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def size(value: Any) -> str:
    v = _finite(value)
    if v is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if v < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit in ("B", "KiB") else f"{v:.1f} {unit}"
        v /= 1024
    return "–"  # pragma: no cover - the loop always returns


def date(value: Any) -> str:
    v = _finite(value)
    return "–" if v is None else dt.datetime.fromtimestamp(v).strftime("%Y-%m-%d %H:%M")


def intf(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "–"


def shortmodel(value: Any) -> str:
    """A model path shown by its last part (the full name is on the run page)."""
    if not isinstance(value, str) or not value:
        return "–"
    return value.rstrip("/").rsplit("/", 1)[-1]


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.DictLoader(
            {
                "layout": LAYOUT,
                "runs": RUNS,
                "run": RUN,
                "compare": COMPARE,
                "summary": SUMMARY,
                "playground": PLAYGROUND,
                "error": ERROR,
            }
        ),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        pct=pct, ci=ci, loss=loss, duration=duration, bytes=size, date=date, intf=intf,
        shortmodel=shortmodel,
    )  # fmt: skip
    env.globals.update(css=CSS)
    return env
