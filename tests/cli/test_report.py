"""`npv-guard report` as a subprocess, and its HTML page rendered by a real headless Chromium."""

from __future__ import annotations

import csv
import html.parser
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

EXE = shutil.which("npv-guard", path=str(Path(sys.executable).parent)) or "npv-guard"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHART_IDS = ("per-day", "by-reason", "by-campaign", "by-hour", "refusals", "consents")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NPV_GUARD_")}
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=base, timeout=120, check=False)


def decision(local: str, verdict: str, *reasons: str, campaign: str = "spring") -> dict[str, Any]:
    return {
        "ts": "2026-12-01T09:00:00.000Z", "event": "decision", "call_id": f"c-{local}", "mode": "ari",
        "verdict": verdict, "reasons": list(reasons), "messages": [], "professional": "acme",
        "consumer": "f00dfeed", "local_time": local, "at": "2026-12-01T09:00:00Z", "campaign": campaign,
    }  # fmt: skip


LINES: list[dict[str, Any]] = [
    decision("2026-12-01T10:30:00+01:00", "allow"),
    decision("2026-12-01T10:45:00+01:00", "allow", campaign="autumn"),
    decision("2026-12-01T21:00:00+01:00", "reject", "OUTSIDE_HOURS"),
    decision("2026-12-02T11:00:00+01:00", "reject", "NO_CONSENT", "CALLER_NOT_NPV"),
    {"ts": "2026-12-01T09:10:00.000Z", "event": "refusal", "source": "agent", "recorded": True, "journaled": False,
     "at": "2026-12-01T09:10:00+00:00", "professional": "acme", "campaign": "spring"},
    {"ts": "2026-12-01T09:20:00.000Z", "event": "consent", "granted": True, "at": "2026-12-01T09:20:00Z",
     "professional": "acme", "consumer": "f00dfeed"},
]  # fmt: skip


@pytest.fixture
def audit(tmp_path: Path) -> Path:
    path = tmp_path / "audit.log"
    path.write_text("\n".join(json.dumps(line) for line in LINES) + "\n{broken\n")
    return path


class _Cells(html.parser.HTMLParser):
    """The summary cells (data-key) and the reason counts (data-reason) of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, int] = {}
        self._key: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        key = found.get("data-key") or (f"reason:{found['data-reason']}" if found.get("data-reason") else None)
        self._key = key

    def handle_data(self, data: str) -> None:
        if self._key and data.strip():
            self.values[self._key] = int(data)
            self._key = None


def cells(page: str) -> dict[str, int]:
    parser = _Cells()
    parser.feed(page)
    return parser.values


def csv_table(path: Path) -> dict[tuple[str, str, str], int]:
    with path.open(encoding="utf-8") as handle:
        return {(r["section"], r["key"], r["series"]): int(r["count"]) for r in csv.DictReader(handle)}


def test_report_writes_the_page_and_the_csv_with_the_same_numbers(audit: Path, tmp_path: Path) -> None:
    page, table = tmp_path / "r.html", tmp_path / "r.csv"
    result = run("report", "--from", "2026-12-01", "--to", "2026-12-02", "--html", str(page), "--csv", str(table),
                 "--json", str(audit))  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["decisions"] == 4 and summary["malformed_lines"] == 1
    text = page.read_text(encoding="utf-8")
    values = cells(text)
    numbers = csv_table(table)
    expected = {"decisions": 4, "allowed": 2, "rejected": 2, "refusals": 1, "consents_granted": 1, "malformed_lines": 1}
    for key, count in expected.items():
        assert values[key] == count, key
        assert numbers[("summary", key, "")] == count, key
    assert values["reason:NO_CONSENT"] == numbers[("rejections_by_reason", "NO_CONSENT", "")] == 1
    assert numbers[("decisions_per_day", "2026-12-02", "reject")] == 1
    assert numbers[("decisions_by_campaign", "autumn", "allow")] == 1
    assert numbers[("refusals_by_source", "agent", "recorded")] == 1
    # Self-contained: nothing to fetch, nothing to run.
    for fetching in ("<script", "src=", "<link", "@import", "url(http", 'href="http', "href='http"):
        assert fetching not in text, fetching
    assert text.count("<svg") == len(CHART_IDS)


def test_filters_narrow_the_numbers(audit: Path, tmp_path: Path) -> None:
    page = tmp_path / "r.html"
    result = run("report", "--from", "2026-12-01", "--to", "2026-12-01", "--campaign", "spring",
                 "--html", str(page), "--json", str(audit))  # fmt: skip
    assert result.returncode == 0, result.stderr
    values = cells(page.read_text(encoding="utf-8"))
    assert (values["decisions"], values["allowed"], values["rejected"]) == (2, 1, 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-12-32", "--to", "2026-12-01"], "--from: '2026-12-32' is not a day (YYYY-MM-DD)"),
        (["--from", "2026-12-02", "--to", "2026-12-01"], "--to 2026-12-01 is before --from 2026-12-02"),
    ],
)
def test_bad_days_exit_2_with_one_line(audit: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = run("report", *args, "--html", str(tmp_path / "r.html"), str(audit))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"npv-guard: {message}"]
    assert not (tmp_path / "r.html").exists()


def test_a_missing_audit_file_exits_2(tmp_path: Path) -> None:
    result = run("report", "--from", "2026-12-01", "--to", "2026-12-01", "--html", str(tmp_path / "r.html"),
                 str(tmp_path / "nowhere.log"))  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == f"npv-guard: {tmp_path / 'nowhere.log'}: no such audit file"


# --- the page in a real browser ------------------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("chromium is not installed (scripts/bootstrap installs Debian's chromium package)")
    return found


def browse(page: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="npv-chromium-") as profile:
        return subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions", "--no-first-run",
             f"--user-data-dir={profile}", "--window-size=1280,3600", *mode, page.as_uri()],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip


def test_the_page_renders_its_charts_in_headless_chromium(audit: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    assert run("report", "--from", "2026-12-01", "--to", "2026-12-02", "--html", str(page), str(audit)).returncode == 0

    dumped = browse(page, "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    for chart in CHART_IDS:
        start = dom.index(f'id="chart-{chart}"')
        figure = dom[start : dom.index("</figure>", start)]
        assert "<svg" in figure, chart
        assert figure.count("<path") >= 5, chart  # axes, ticks and bars: a drawn chart, not an empty box

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    taken = browse(page, f"--screenshot={shot}")
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    print(f"report screenshot: {shot}")

    from matplotlib.image import imread  # noqa: PLC0415

    pixels = imread(shot)[:, :, :3]
    assert pixels.std() > 0.05  # not a blank page
    # The verdict colours of the charts are on screen: allowed bars green, rejected bars red.
    red = ((pixels[:, :, 0] > 0.7) & (pixels[:, :, 1] < 0.3) & (pixels[:, :, 2] < 0.3)).sum()
    green = ((pixels[:, :, 1] > 0.4) & (pixels[:, :, 0] < 0.3) & (pixels[:, :, 2] < 0.3)).sum()
    assert red > 500 and green > 500, (red, green)
