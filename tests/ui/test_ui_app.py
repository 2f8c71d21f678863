"""The dashboard's pages over HTTP (FastAPI TestClient) on hand-written run directories."""

from __future__ import annotations

import os
import re
from html import unescape

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner
from ui_helpers import PNG, write_compare_dir, write_finished_run

from tuneforge.cli.main import app as cli_app
from tuneforge.errors import TuneforgeError
from tuneforge.ui.app import create_app


@pytest.fixture
def client(runs_dir) -> TestClient:
    return TestClient(create_app(runs_dir))


def row(html: str, name: str) -> str:
    match = re.search(rf'<tr class="run[^"]*" data-run="{name}">(.*?)</tr>', html, re.S)
    assert match, f"no row for {name}"
    return match.group(1)


def test_runs_list_shows_every_run_with_its_numbers_and_problems(client):
    response = client.get("/")
    assert response.status_code == 200
    html = response.text
    good = row(html, "good")
    assert 'href="/runs/good"' in good
    assert "accuracy 75.0 % (55.0–95.0)" in good
    assert "base_zero 50.0 %" in good
    assert "0.5000" in good and "0.6000" in good  # final train loss, best val loss
    assert "12.5 s" in good and "512.0 MiB" in good
    assert "not evaluated" in row(html, "plain")
    assert "no manifest.json" in row(html, "partial")
    assert "manifest.json: unreadable" in row(html, "corrupt")
    assert 'href="/compare/summary/sweep"' in html
    assert "data-prepared" in html  # listed as "not a run", not as a row
    assert 'data-run="data-prepared"' not in html and ".hidden" not in html


def test_runs_list_sorts(client):
    html = client.get("/?sort=name&desc=0").text
    order = re.findall(r'data-run="([^"]+)"', html)
    assert order == ["corrupt", "good", "partial", "plain"]
    html = client.get("/?sort=name&desc=1").text
    assert re.findall(r'data-run="([^"]+)"', html) == ["plain", "partial", "good", "corrupt"]
    assert client.get("/?sort=bogus&desc=maybe").status_code == 200


def test_empty_runs_dir_says_how_to_make_a_run(tmp_path):
    html = TestClient(create_app(tmp_path)).get("/").text
    assert "No runs in" in html and "tuneforge train" in html


def test_run_page_has_curves_eval_report_manifest_and_config(client):
    response = client.get("/runs/good")
    assert response.status_code == 200
    html = response.text
    assert 'id="loss-chart"' in html and 'id="lr-chart"' in html
    assert 'data-series="train" data-points="6"' in html
    assert 'data-series="val" data-points="3"' in html
    # The eval report: verdict, the variants table, comparisons, confusions, flips, worst.
    assert "Verdict:</strong> tuned beats base_zero" in html
    for heading in ("Variants", "Tuned vs each baseline", "Top confusions (tuned)",
                    "Flipped examples: tuned vs base_zero", "Most confident mistakes (tuned)"):  # fmt: skip
        assert heading in html
    assert "What is oak? &lt;b&gt;bold&lt;/b&gt;" in html  # example text is escaped
    assert 'src="/runs/good/file/eval/confusion_tuned.png"' in html
    assert 'href="/runs/good/file/eval/report.html"' in html
    assert 'id="manifest"' in html and "&#34;trainable&#34;: 1024" in html
    assert 'id="config"' in html and "kind: lora" in html
    assert 'href="/playground?adapter=good"' in html


def test_run_page_figures_are_served(client):
    response = client.get("/runs/good/file/eval/confusion_tuned.png")
    assert response.status_code == 200 and response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert client.get("/runs/good/file/loss.png").content == PNG
    assert "report" in client.get("/runs/good/file/eval/report.html").text


@pytest.mark.parametrize(
    "url",
    [
        "/runs/%2e%2e",
        "/runs/..%2f..%2fetc",
        "/runs/.hidden",
        "/runs/missing",
        "/runs/good/file/config.yaml",
        "/runs/good/file/manifest.json",
        "/runs/good/file/eval/../manifest.json",
        "/runs/good/file/eval/%2e%2e/manifest.json",
        "/runs/good/file/eval/missing.png",
        "/runs/%2e%2e/file/loss.png",
        "/compare/summary/good",
        "/compare/summary/%2e%2e",
        "/compare/summary/sweep/file/summary.json",
    ],
)
def test_names_outside_the_runs_dir_are_not_found(client, url):
    response = client.get(url)
    assert response.status_code == 404
    assert "Not found" in response.text


def test_broken_runs_have_a_page_too(client):
    for name in ("partial", "corrupt", "plain"):
        response = client.get(f"/runs/{name}")
        assert response.status_code == 200, name
    html = client.get("/runs/plain").text
    assert "Not evaluated yet" in html and "tuneforge eval" in html
    html = client.get("/runs/partial").text
    assert "no manifest.json" in html and 'data-series="train" data-points="1"' in html
    assert '<meta http-equiv="refresh"' in html  # metrics just written: a live training
    assert '<meta http-equiv="refresh"' not in client.get("/runs/good").text


def test_a_stopped_run_is_not_reloaded(client, runs_dir):
    metrics = runs_dir / "partial" / "metrics.jsonl"
    os.utime(metrics, (1_000_000, 1_000_000))
    assert '<meta http-equiv="refresh"' not in client.get("/runs/partial").text


def test_compare_two_runs(client):
    html = client.get("/compare?run=good&run=plain").text
    assert 'id="compare-table"' in html
    assert '<a href="/runs/good">good</a>' in html and '<a href="/runs/plain">plain</a>' in html
    assert 'data-series="good train"' in html and 'data-series="plain train"' in html
    assert 'data-series="good val"' in html
    assert 'id="config-diff"' in html and "train.lr" in html
    assert "75.0 % (55.0–95.0)" in html  # good's tuned score
    same = client.get("/compare?runs=good,plain").text
    assert same.count('id="compare-table"') == 1


def test_compare_with_fewer_than_two_or_unknown_runs(client):
    html = unescape(client.get("/compare?runs=good,nope,..").text)
    assert "Pick at least two runs" in html
    assert "no run named 'nope'" in html and "is not a run name" in html
    assert client.get("/compare").status_code == 200


def test_compare_summary_page(client):
    html = client.get("/compare/summary/sweep").text
    assert 'id="summary-verdict"' in html and "Winner: plain" in html
    assert '<a href="/runs/good">' in html  # the row's run_dir links to the run
    assert 'href="/compare?runs=good%2Cplain"' in html
    assert 'src="/compare/summary/sweep/file/quality_vs_time.png"' in html
    assert 'id="summary-md"' in html
    assert "<h2>rows</h2>" in html  # the records get their own full-width table
    assert client.get("/compare/summary/sweep/file/quality_vs_time.png").content == PNG


def test_runs_dir_that_is_a_compare_output_shows_its_runs_and_summary(tmp_path):
    out = write_compare_dir(tmp_path / "cmp", ["r1", "r2"])
    write_finished_run(out / "runs", "r1")
    write_finished_run(out / "runs", "r2", evaluated=False)
    client = TestClient(create_app(out))
    html = client.get("/").text
    assert 'data-run="r1"' in html and 'data-run="r2"' in html
    assert 'href="/compare/summary/cmp"' in html
    summary = client.get("/compare/summary/cmp").text
    assert '<a href="/runs/r1">' in summary
    assert "tuneforge ui --runs" not in summary  # its runs are the ones listed


def test_compare_output_among_the_runs_says_where_its_runs_are(client, runs_dir):
    write_finished_run(runs_dir / "sweep" / "runs", "inner")
    summary = client.get("/compare/summary/sweep").text
    assert f"tuneforge ui --runs {runs_dir / 'sweep'}" in summary
    assert 'data-run="inner"' not in client.get("/").text


def test_api_runs_is_json(client):
    data = client.get("/api/runs").json()
    names = {r["name"]: r for r in data["runs"]}
    assert names["good"]["eval"]["tuned"] == 0.75 and names["good"]["servable"] is True
    assert data["compares"] == ["sweep"]


def test_playground_lists_servable_runs_and_why_others_are_not(client, runs_dir):
    full = write_finished_run(runs_dir, "fullrun", evaluated=False)
    (full / "adapter_config.json").unlink()
    html = client.get("/playground?adapter=plain").text
    assert '<option value="plain"' in html and "selected" in html
    assert '<option value="partial"' not in html
    assert "partial: no trained weights yet" in html
    assert "fullrun: no trained weights yet" in html


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"adapter": "good", "target": "base"}, 400, "type a prompt"),
        ({"adapter": "good", "target": "x", "prompt": "hi"}, 400, "target"),
        ({"target": "base", "prompt": "hi"}, 400, "choose an adapter"),
        ({"adapter": "good", "prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
        ({"adapter": "good", "prompt": "hi", "max_tokens": "9"}, 400, "max_tokens"),
        ({"adapter": "good", "prompt": "hi", "temperature": 5}, 400, "temperature"),
        ({"adapter": "nope", "prompt": "hi"}, 404, "no run named 'nope'"),
        ({"adapter": "..", "prompt": "hi"}, 404, "not a run name"),
        ({"adapter": "partial", "prompt": "hi"}, 400, "cannot be served: no trained weights"),
        (["not", "an", "object"], 400, "JSON object"),
    ],
)
def test_chat_api_refuses_bad_requests(client, body, status, message):
    response = client.post("/api/chat", json=body)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_chat_api_reports_an_unexpected_failure_as_json(runs_dir):
    class Failing:
        description = "a backend that fails"

        async def choices(self):
            return []

        async def chat(self, adapter, target, messages, options):
            raise OSError("disk on fire")

        def close(self):
            pass

    client = TestClient(create_app(runs_dir, Failing()))
    response = client.post("/api/chat", json={"adapter": "good", "prompt": "hi"})
    assert response.status_code == 500
    assert response.json()["error"] == "the playground failed: OSError: disk on fire"


def test_chat_api_refuses_other_content_types(client):
    # A cross-site form could post text/plain without a CORS preflight.
    response = client.post(
        "/api/chat",
        content=b'{"adapter": "good", "prompt": "hi"}',
        headers={"content-type": "text/plain"},
    )
    assert response.status_code == 415


def test_chat_api_refuses_a_body_that_is_not_json(client):
    response = client.post(
        "/api/chat", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "JSON" in response.json()["error"]


def test_only_allowed_host_names_are_answered(runs_dir):
    from tuneforge.ui.app import LOOPBACK_HOSTS

    app = create_app(runs_dir, allowed_hosts=LOOPBACK_HOSTS)
    assert TestClient(app, base_url="http://localhost:8600").get("/").status_code == 200
    assert TestClient(app, base_url="http://127.0.0.1:8600").get("/").status_code == 200
    # A page on another site reaching 127.0.0.1 through a rebound DNS name sends its own Host.
    assert TestClient(app, base_url="http://evil.example:8600").get("/").status_code == 400


def test_create_app_refuses_a_missing_or_non_directory_runs_dir(tmp_path):
    with pytest.raises(TuneforgeError, match="no such directory"):
        create_app(tmp_path / "missing")
    (tmp_path / "file").write_text("")
    with pytest.raises(TuneforgeError, match="not a directory"):
        create_app(tmp_path / "file")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runs", "{tmp}/missing"], "no such directory"),
        (["--runs", "{tmp}", "--port", "70000"], "expected 0-65535"),
        (["--runs", "{tmp}", "--serve-url", "localhost:8000"], "expected http://HOST:PORT"),
    ],
)
def test_cli_bad_input_exits_2(tmp_path, args, message):
    result = CliRunner().invoke(cli_app, ["ui", *[a.format(tmp=tmp_path) for a in args]])
    assert result.exit_code == 2
    assert message in result.output


def test_cli_serves_the_dashboard(runs_dir, isolated_cache):
    """`tuneforge ui` as a user starts it: a process listening on the port, pages answered."""
    import subprocess
    import sys
    import time

    import httpx
    from ui_helpers import free_socket

    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()  # the port is free again for the server (a race only with another binder)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TUNEFORGE_CACHE": str(isolated_cache)}
    command = [
        sys.executable,
        "-m",
        "tuneforge",
        "ui",
        "--runs",
        str(runs_dir),
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read().decode()
                assert time.monotonic() < deadline, "tuneforge ui did not start in 60 s"
                time.sleep(0.2)
        assert response.status_code == 200 and 'data-run="good"' in response.text
        foreign = httpx.get(f"http://127.0.0.1:{port}/", headers={"host": "evil.example"})
        assert foreign.status_code == 400
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    assert f"on http://127.0.0.1:{port}/" in output
