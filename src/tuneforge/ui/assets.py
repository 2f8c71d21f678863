"""The dashboard's stylesheet and its one script (the playground's), inlined into the pages.

Inline, so a page is one request and nothing is fetched from anywhere else.
"""

CSS = """
:root { --fg: #1b1b1b; --muted: #666; --line: #dcdcdc; --accent: #2f6db5; --bad: #b3261e;
        --bg2: #f5f7fa; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
       margin: 0; }
header { background: #20242b; color: #fff; padding: 0.55em 1.2em; display: flex; gap: 1.5em;
         align-items: baseline; flex-wrap: wrap; }
header a { color: #fff; text-decoration: none; } header a.brand { font-weight: 700; }
header nav a { margin-right: 1.1em; opacity: 0.85; } header nav a.on { opacity: 1;
         border-bottom: 2px solid #7fb0ef; }
header .where { margin-left: auto; color: #aab; font-size: 0.85em; }
main { max-width: 1240px; margin: 1.2em auto; padding: 0 1.2em; }
h1 { font-size: 1.45em; margin: 0.2em 0 0.6em; } h2 { font-size: 1.2em; margin-top: 1.8em;
     border-bottom: 1px solid var(--line); padding-bottom: 0.2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
a { color: var(--accent); }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.6em 0; }
th, td { border: 1px solid var(--line); padding: 0.3em 0.55em; text-align: left;
         vertical-align: top; }
th { background: #f1f3f6; font-weight: 600; } td.num, th.num { text-align: right;
     font-variant-numeric: tabular-nums; white-space: nowrap; }
table.report td { white-space: pre-wrap; }
table.kv th { width: 14em; }
tr.problem td { background: #fff6f5; }
.scroll { overflow-x: auto; }
#compare-table td { min-width: 9em; max-width: 30em; }
.note { color: var(--bad); font-size: 0.88em; margin: 0.15em 0; }
.muted, .empty { color: var(--muted); }
.verdict { background: #eef4fc; border-left: 4px solid var(--accent); padding: 0.6em 0.9em; }
.facts { display: flex; flex-wrap: wrap; gap: 0.4em 1.6em; margin: 0.4em 0 1em; }
.facts div span { color: var(--muted); margin-right: 0.3em; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
svg.chart { background: #fff; border: 1px solid var(--line); max-width: 100%; height: auto; }
svg.chart .grid { stroke: #ececec; } svg.chart .frame { fill: none; stroke: #bbb; }
svg.chart text { font: 11px system-ui, sans-serif; fill: #444; }
svg.chart .chart-title { font-size: 13px; font-weight: 600; fill: #222; }
figure { margin: 0.8em 0; display: inline-block; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid var(--line); }
.eval-figure img { max-width: min(560px, 100%); }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
figcaption { color: var(--muted); font-size: 0.85em; }
pre { background: var(--bg2); padding: 0.7em; overflow: auto; font-size: 0.85em;
      max-height: 32em; }
details summary { cursor: pointer; color: var(--accent); margin: 0.5em 0; }
button, select, input, textarea { font: inherit; }
button { background: var(--accent); color: #fff; border: 0; padding: 0.45em 1.1em;
         border-radius: 4px; cursor: pointer; } button:disabled { opacity: 0.55; cursor: wait; }
.pg-form label { display: block; margin: 0.6em 0 0.2em; font-weight: 600; }
.pg-form textarea { width: 100%; padding: 0.4em; }
.pg-form .row { display: flex; gap: 1.5em; align-items: end; flex-wrap: wrap; }
.answers { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; margin-top: 1.2em; }
.answer { border: 1px solid var(--line); border-radius: 6px; padding: 0.6em 0.8em;
          min-height: 8em; }
.answer h3 { margin: 0 0 0.4em; font-size: 1em; }
.answer .text { white-space: pre-wrap; overflow-wrap: anywhere; max-height: 28em;
          overflow-y: auto; } .answer .meta { color: var(--muted);
          font-size: 0.82em; margin-top: 0.5em; }
.answer.error .text { color: var(--bad); }
th a.sort { color: inherit; text-decoration: none; } th a.sort:hover { text-decoration: underline; }
@media (max-width: 800px) { .answers { grid-template-columns: 1fr; } }
"""

PLAYGROUND_JS = """
(function () {
  const form = document.getElementById("pg-form");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  const adapter = $("adapter"), system = $("system"), prompt = $("prompt");
  function prefill() {
    const option = adapter.options[adapter.selectedIndex];
    system.value = option.dataset.system || "";
    prompt.placeholder = option.dataset.example ? "e.g. " + option.dataset.example : "Type a message";
    document.querySelector("#answer-adapter .name").textContent = adapter.value;
  }
  adapter.addEventListener("change", prefill);
  prefill();
  // An answer of only newlines or spaces would look like no answer at all.
  function shown(text) {
    if (text === "") return "(empty answer)";
    if (text.trim() === "") return "(whitespace only: " + JSON.stringify(text) + ")";
    return text;
  }
  async function ask(target, body, pane) {
    pane.classList.remove("error");
    pane.querySelector(".text").textContent = "…";
    pane.querySelector(".meta").textContent = "";
    try {
      const response = await fetch("/api/chat", {method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify(Object.assign({target: target}, body))});
      const data = await response.json();
      if (!response.ok) throw new Error(data.error || ("HTTP " + response.status));
      pane.querySelector(".text").textContent = shown(data.text);
      pane.querySelector(".meta").textContent = data.model + " · " + data.completion_tokens +
        " tokens · " + data.seconds.toFixed(2) + " s" +
        (data.finish_reason === "length" ? " · stopped at max tokens" : "");
      pane.dataset.done = "ok";
    } catch (err) {
      pane.classList.add("error");
      pane.querySelector(".text").textContent = String(err.message || err);
      pane.dataset.done = "error";
    }
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!prompt.value.trim() && prompt.placeholder.startsWith("e.g. ")) {
      prompt.value = prompt.placeholder.slice(5);
    }
    const body = {adapter: adapter.value, system: system.value, prompt: prompt.value,
      max_tokens: parseInt($("max_tokens").value, 10) || 128,
      temperature: parseFloat($("temperature").value) || 0};
    const panes = [$("answer-base"), $("answer-adapter")];
    panes.forEach((p) => delete p.dataset.done);
    $("send").disabled = true;
    $("status").textContent = "generating… (the first request loads the model)";
    await Promise.all([ask("base", body, panes[0]), ask("adapter", body, panes[1])]);
    $("send").disabled = false;
    $("status").textContent = "";
  });
})();
"""
