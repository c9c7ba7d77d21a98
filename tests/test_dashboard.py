"""The dashboards against a real system of three apps (tests/apps/live_system.py: ingest ->
analyzer, a --workers 2 pool -> alerter -> ingest, over tcp on 127.0.0.1), read by a real
headless Chromium over the DevTools protocol, and ``zmqapp top`` on the same system.

``ZMQAPP_SCREENSHOT=docs/dashboard.png pytest tests/test_dashboard.py`` also writes the
README's picture of the dashboard (after a longer look, so that the sparklines fill).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser import Browser, find_chromium
from clitools import ZMQAPP, Proc

from zmqapp.testing import wait_for

SYSTEM = str(Path(__file__).parent / "apps" / "live_system.py")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@dataclass
class System:
    #: App name -> its HTTP URL.
    urls: dict[str, str]
    procs: list[Proc]


def _run(procs: list[Proc], spec: str, *settings: str, workers: int = 1) -> tuple[Proc, str]:
    sets = [part for setting in settings for part in ("--set", setting)]
    proc = Proc([*ZMQAPP, "run", "--app", f"{SYSTEM}:{spec}", "--workers", str(workers),
                 "--set", "HTTP=127.0.0.1:0", *sets])  # fmt: skip
    procs.append(proc)
    [line] = proc.wait_for_line(r"HTTP: http://", stream="err")
    return proc, re.search(r"(http://\S+)", line).group(1)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def system() -> Iterator[System]:
    """The three apps, started in the order their addresses are known, all ready."""
    procs: list[Proc] = []
    try:
        _, alerter = _run(procs, "alerter")
        channels = get_json(alerter + "/status")["channels"]
        anomalies, alerts = channels["anomalies"]["bound"][0], channels["alerts"]["bound"][0]
        _, ingest = _run(procs, "ingest", f"CHANNELS.alerts.endpoint=>{alerts}")
        readings = get_json(ingest + "/status")["channels"]["readings"]["bound"][0]
        _, analyzer = _run(
            procs, "analyzer", f"CHANNELS.readings.endpoint=>{readings}",
            f"CHANNELS.anomalies.endpoint=>{anomalies}", workers=2,
        )  # fmt: skip
        urls = {"ingest": ingest, "analyzer": analyzer, "alerter": alerter}
        for url in urls.values():
            wait_for(lambda url=url: get_json(url + "/status")["ready"], timeout=20)
        yield System(urls, procs)
    finally:
        for proc in procs:
            proc.kill()


def start_dashboard(system: System, spawn: Any) -> tuple[Proc, str]:
    proc = spawn([*ZMQAPP, "dashboard", *system.urls.values(), "--port", "0"])
    [line] = proc.wait_for_line(r"dashboard of 3 app\(s\): http://", stream="err")
    return proc, re.search(r"(http://\S+)", line).group(1)  # type: ignore[union-attr]


@pytest.fixture
def dashboard(system: System, spawn: Any) -> str:
    return start_dashboard(system, spawn)[1]


@pytest.fixture
def browser(spawn: Any, tmp_path: Path) -> Iterator[Browser]:
    executable = find_chromium()
    if executable is None:
        pytest.skip(
            "no Chromium to load the dashboard in: install it (apt-get install -y chromium) "
            "or name one with ZMQAPP_CHROMIUM"
        )
    page = Browser(spawn, executable, tmp_path / "profile", size=(1600, 1000))
    yield page
    page.close()


CARDS = """[...document.querySelectorAll('g.card')].map(c => ({
    app: c.dataset.app, channel: c.dataset.channel,
    in: Number(c.dataset.in), out: Number(c.dataset.out)}))"""
EDGES = """[...document.querySelectorAll('g.edge')].map(e => ({
    kind: e.dataset.kind, from: e.dataset.from, to: e.dataset.to, rate: Number(e.dataset.rate)}))"""


def test_the_system_dashboard_draws_the_topology_with_live_rates(
    system: System, dashboard: str, browser: Browser, tmp_path: Path
) -> None:
    browser.navigate(dashboard)
    # Live: rates need two polls; wait until every edge of the flow shows traffic.
    browser.wait(
        "[...document.querySelectorAll('g.edge')].filter(e => Number(e.dataset.rate) > 0)"
        ".length >= 4",
        timeout=20,
    )
    updates = browser.evaluate("Number(document.body.dataset.updates)")
    cards = {(c["app"], c["channel"]): c for c in browser.evaluate(CARDS)}
    assert set(cards) == {
        ("ingest", "readings"), ("ingest", "alerts"), ("analyzer", "readings"),
        ("analyzer", "anomalies"), ("alerter", "anomalies"), ("alerter", "alerts"),
    }  # fmt: skip
    assert cards[("ingest", "readings")]["out"] > 0
    assert cards[("analyzer", "readings")]["in"] > 0
    assert cards[("alerter", "anomalies")]["in"] > 0
    edges = {(e["kind"], e["from"], e["to"]): e["rate"] for e in browser.evaluate(EDGES)}
    assert set(edges) == {
        ("connect", "ingest/readings", "analyzer/readings"),  # PUSH bound, PULL connects
        ("connect", "analyzer/anomalies", "alerter/anomalies"),
        ("connect", "alerter/alerts", "ingest/alerts"),  # PUB bound, SUB connects
        ("send_to", "analyzer/readings", "analyzer/anomalies"),
    }
    assert all(rate > 0 for rate in edges.values()), edges
    labels = browser.evaluate("[...document.querySelectorAll('.label')].map(l => l.textContent)")
    assert any(re.fullmatch(r"[\d.]+k?/stopics \"critical\"", label) for label in labels), labels
    # A row per app and per worker, and the page keeps updating (at least once a second).
    rows = browser.evaluate(
        "[...document.querySelectorAll('#processes tbody tr')]"
        ".map(r => [r.dataset.app, r.dataset.worker])"
    )
    assert rows == [["ingest", ""], ["analyzer", ""], ["analyzer", "0"], ["analyzer", "1"],
                    ["alerter", ""]]  # fmt: skip
    browser.wait(f"Number(document.body.dataset.updates) >= {updates + 2}", timeout=5)
    shot = tmp_path / "dashboard.png"
    wanted = os.environ.get("ZMQAPP_SCREENSHOT")
    if wanted:  # the README's picture: let the sparklines fill first
        browser.wait(f"Number(document.body.dataset.updates) >= {updates + 25}", timeout=60)
    browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if wanted:
        shutil.copyfile(shot, wanted)


def test_an_apps_own_page_shows_its_channels_live(system: System, browser: Browser) -> None:
    browser.navigate(system.urls["analyzer"] + "/")
    browser.wait("document.querySelectorAll('g.card[data-in]').length === 2", timeout=10)
    browser.wait(
        "Number(document.querySelector('g.card[data-channel=readings]').dataset.in) > 0 && "
        "Number(document.querySelector('g.card[data-channel=anomalies]').dataset.out) > 0",
        timeout=10,
    )
    assert browser.evaluate("document.getElementById('title').textContent") == "analyzer"
    kinds = browser.evaluate("[...document.querySelectorAll('g.edge')].map(e => e.dataset.kind)")
    assert kinds == ["send_to"]
    workers = browser.evaluate("document.querySelectorAll('#processes tr.worker').length")
    assert workers == 2
    # A pool has no tap of its own: the page says so, in the app's words.
    browser.evaluate(CLICK.format(channel="readings"))
    note = browser.wait("document.getElementById('tap-note').className === 'bad' && "
                        "document.getElementById('tap-note').textContent")  # fmt: skip
    assert "no tap of its own" in note


CLICK = """document.querySelector('g.card[data-channel={channel}]')
    .dispatchEvent(new MouseEvent('click', {{bubbles: true}}))"""


def test_clicking_a_channel_on_an_apps_page_taps_it(system: System, browser: Browser) -> None:
    browser.navigate(system.urls["ingest"] + "/")
    browser.wait("document.querySelectorAll('g.card').length === 2", timeout=10)
    browser.evaluate(CLICK.format(channel="readings"))
    browser.wait("document.querySelectorAll('#tap-lines li').length >= 10", timeout=10)
    assert browser.evaluate("document.getElementById('tap-title').textContent") == (
        "tap · readings"
    )
    lines = browser.evaluate(
        "[...document.querySelectorAll('#tap-lines li')]"
        ".map(li => [...li.children].map(part => part.textContent))"
    )
    for clock, direction, body in lines:
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", clock) and direction == "out"
        assert set(json.loads(body)) == {"n", "sensor", "value"}
    numbers = [json.loads(body)["n"] for _, _, body in lines]
    assert numbers == sorted(numbers)  # in the order they were sent
    browser.evaluate("document.getElementById('tap-close').click()")
    assert browser.evaluate("document.getElementById('tap').hidden") is True


def test_the_dashboard_api_joins_the_apps(system: System, spawn: Any) -> None:
    proc, dashboard = start_dashboard(system, spawn)
    document = get_json(dashboard + "api/system")
    names = {app["id"]: app["status"]["app"] for app in document["apps"]}
    assert sorted(names.values()) == ["alerter", "analyzer", "ingest"]
    joined = {
        (names[e["from"]["app"]], e["from"]["channel"], names[e["to"]["app"]], e["to"]["channel"],
         tuple(e["types"]), e["via"]["counter"])
        for e in document["edges"]
    }  # fmt: skip
    assert joined == {
        ("ingest", "readings", "analyzer", "readings", ("PUSH", "PULL"), "received"),
        ("analyzer", "anomalies", "alerter", "anomalies", ("PUSH", "PULL"), "sent"),
        ("alerter", "alerts", "ingest", "alerts", ("PUB", "SUB"), "received"),
    }
    [sub] = [e for e in document["edges"] if e["types"] == ["PUB", "SUB"]]
    assert sub["topics"] == ["critical"]
    with urllib.request.urlopen(dashboard, timeout=10) as response:
        page = response.read().decode()
    assert 'content="api/system"' in page and "static/dashboard.js" in page
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_top_shows_every_app_and_worker(system: System, spawn: Any) -> None:
    top = spawn([*ZMQAPP, "top", *system.urls.values(), "--once", "--interval", "1"])
    assert top.wait(20) == 0, top.err
    screen = "\n".join(top.out)
    assert "3 of 3 apps answering" in screen
    heads = [line.split()[0] for line in top.out if line and not line.startswith(" ")]
    assert heads[1:] == ["ingest", "analyzer", "alerter"]
    assert re.search(r"analyzer .* 2 workers", screen)
    workers = [line.split() for line in top.out if re.match(r"  [01] ", line)]
    assert [w[0] for w in workers] == ["0", "1"]
    assert all(float(w[5]) > 0 for w in workers), workers  # each worker takes readings
    readings = next(line.split() for line in top.out if re.match(r"  readings +PULL", line))
    assert float(readings[2]) > 0
