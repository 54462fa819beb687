"""`taskledger report --html`: a self-contained audit that headless Chromium renders with
its charts and no console errors.

Needs Debian's `chromium` package; the set-up installs it (apt-get) when it is missing.
"""

from __future__ import annotations

import json
import re
import struct
import zlib

from builders import task_status
from cli_log import KILL, PARTITION_AT, T0, run
from headless import browse, console_lines
from hypothesis import given
from hypothesis import strategies as st

from engine.ledger import Ledger
from tools.report.html import anchor

CHARTS = 6  # runs, drift by cell, launches in flight, commands, detection, convergence


def png_pixels(data: bytes) -> set[tuple[int, int, int]]:
    """The distinct RGB colours of an 8-bit RGB/RGBA PNG (enough to see what was painted)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat = 8, b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    assert depth == 8 and colour in (2, 6)
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    previous = bytearray(stride)
    colours = set()
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + pred) & 0xFF
        colours.update((line[i], line[i + 1], line[i + 2]) for i in range(0, stride, channels * 4))
        previous = line
    return colours


def test_report_content(story_log, tmp_path):
    out = tmp_path / "audit.html"
    result = run("report", "--log", story_log, "--html", str(out), "--json")
    assert result.exit_code == 0, result.output
    page = out.read_text()
    # Self-contained: no script, nothing fetched from anywhere.
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page)
    assert "default-src 'none'" in page
    for section in ("runs", "drift", "commands", "converge", "tasks"):
        assert f'id="{section}"' in page
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart"') == CHARTS
    # A section per task that drifted or was acted on, with its history and why.
    assert f'id="{anchor("rogue/1")}"' in page
    assert "killed because the implicit run #1 at 03:01:40" in page
    assert f"KILL #{KILL}" in page
    assert "R-IMPLICIT-KILL-UNKNOWN" in page


def test_chromium_renders_the_charts_without_console_errors(story_log, tmp_path, chromium):
    out = tmp_path / "audit.html"
    assert run("report", "--log", story_log, "--html", str(out)).exit_code == 0
    url = out.as_uri()

    # The detector works: a page that logs an error is caught.
    control = tmp_path / "control.html"
    control.write_text("<!DOCTYPE html><script>console.error('control-error')</script>")
    seen = browse(chromium, control.as_uri(), str(tmp_path / "p0"), "--dump-dom")
    assert any("control-error" in line for line in console_lines(seen.stderr))

    dom = browse(chromium, url, str(tmp_path / "p1"), "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_lines(dom.stderr) == []
    rendered = dom.stdout.decode()
    assert rendered.count("<svg") == CHARTS and 'class="bar"' in rendered
    assert 'class="series"' in rendered

    shot = tmp_path / "shot.png"
    painted = browse(
        chromium, url, str(tmp_path / "p2"), f"--screenshot={shot}", "--window-size=1000,2200"
    )
    assert painted.returncode == 0 and shot.exists(), painted.stderr[-2000:]
    assert console_lines(painted.stderr) == []
    colours = png_pixels(shot.read_bytes())
    # The charts' colours were painted: runs/commands (blue, green), drift lines (orange).
    for rgb in ((0x00, 0x72, 0xB2), (0x00, 0x9E, 0x73), (0xE6, 0x9F, 0x00)):
        assert rgb in colours, rgb


# -- anchors -------------------------------------------------------------------------------------
def test_anchors_are_readable_stable_and_tell_close_ids_apart():
    # Ids that slug alike stay apart (the old suffix kept 8 bytes of the id: these collided).
    assert anchor("web/0/abc:1") != anchor("web/0/abc.1")
    assert anchor("web/0/abc:1").startswith("task-web-0-abc-1-")
    # Stable: a function of the id alone, pinned (a user links to it).
    assert anchor("rogue/1") == "task-rogue-1-1ffcb5a9c7ccfd31"
    assert anchor("").startswith("task-id-") and anchor("///").startswith("task-id-")
    assert len(anchor("x" * 500)) < 80


@given(st.lists(st.text(), min_size=2, max_size=20, unique=True))
def test_distinct_ids_get_distinct_valid_anchors(task_ids):
    anchors = [anchor(t) for t in task_ids]
    assert len(set(anchors)) == len(anchors)
    assert all(re.fullmatch(r"task-[A-Za-z0-9_-]+", a) for a in anchors)


# -- what the report keeps and says --------------------------------------------------------------
def test_only_tasks_that_drifted_or_were_acted_on_get_a_section(partition_log, tmp_path):
    path, ids = partition_log
    out = tmp_path / "p.html"
    result = run("report", "--log", path, "--html", str(out), "--json")
    assert result.exit_code == 0, result.output
    # Every task was a launch in flight once; only web/7/g7 drifted and was acted on.
    assert json.loads(result.stdout)["tasks"] == 1
    page = out.read_text()
    assert f'id="{anchor("web/7/g7")}"' in page
    assert (
        f'id="{anchor("web/3/g3")}"' not in page
        and f'id="{anchor(ids["replacement"])}"' not in page
    )
    assert "1 of 11 task(s) drifted or were acted on: 1 drifted" in page
    assert "1 were acted on by a command" in page
    everything = tmp_path / "all.html"
    assert run("report", "--log", path, "--html", str(everything), "--all-tasks").exit_code == 0
    assert f'id="{anchor("web/3/g3")}"' in everything.read_text()


def test_reconcile_commands_show_when_their_answers_came(story_log, partition_log, tmp_path):
    out = tmp_path / "s.html"
    assert run("report", "--log", story_log, "--html", str(out)).exit_code == 0
    rows = reconcile_rows(out.read_text())
    assert rows["R-IMPLICIT-ASK"][-1] == "answered" and rows["R-EXPLICIT-ROUND"][-1] == "answered"
    assert "dispatched" not in rows["R-IMPLICIT-ASK"]
    # As of id 20, web/0 has answered the explicit run's question and web/1 not yet.
    assert run("report", "--log", story_log, "--html", str(out), "--as-of", "20").exit_code == 0
    assert reconcile_rows(out.read_text())["R-EXPLICIT-ROUND"][-1] == "partly answered"
    # The partition's explicit run asked ten tasks and the master never answered.
    path, _ = partition_log
    assert run("report", "--log", path, "--html", str(out)).exit_code == 0
    assert reconcile_rows(out.read_text())["R-EXPLICIT-ROUND"][-1] == "unanswered"


def reconcile_rows(page: str) -> dict[str, list[str]]:
    """The RECONCILE table's rows by rule (the last row of each rule), as cell texts."""
    table = page.split("RECONCILE commands: when their answers came")[1].split("</table>")[0]
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", table)[1:]:
        cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        rows[cells[1]] = cells
    return rows


def test_detection_delay_and_convergence_are_shown_apart(partition_log, tmp_path):
    path, ids = partition_log
    out = tmp_path / "c.html"
    assert run("report", "--log", path, "--html", str(out)).exit_code == 0
    page = out.read_text()
    # web/7/g7: first evidence, the UNREACHABLE update (PARTITION_AT); the ledger learns of
    # the drift when the saga marks it LOST (902 s later); it converges when Mesos says
    # TASK_KILLED (at PARTITION_AT + 960, 58 s after).
    assert "1 drift episode(s), first evidence to detection: median 902.0 s" in page
    assert "1 episode(s) converged, detection to agreement: median 58.0 s" in page
    table = page.split("The longest drift episodes")[1].split("</table>")[0]
    assert f"#{ids['unreachable']} 04:23:20" in re.sub(r"<[^>]+>", "", table)
    assert "timer" in table and "R-PARTITION-TIMEOUT" in re.sub(r"<[^>]+>", "", table)
    assert PARTITION_AT == T0 + 5000  # 04:23:20


def test_launches_in_flight_are_charted_apart_from_drift(partition_log, tmp_path):
    path, _ = partition_log
    out = tmp_path / "f.html"
    assert run("report", "--log", path, "--html", str(out)).exit_code == 0
    page = out.read_text()
    drift_chart, flight_chart = re.findall(r'<svg[^>]*aria-label="([^"]*)"[^>]*>(.*?)</svg>', page)[
        1:3
    ]
    assert (
        drift_chart[0] == "drift over time by cell" and "launches in flight" not in drift_chart[1]
    )
    assert flight_chart[0] == "launches in flight over time"
    assert "<title>launches in flight</title>" in flight_chart[1]
    # The drift chart's scale is the drift's (1 task), not the launch's (10 tasks).
    assert ">10</text>" in flight_chart[1] and ">10</text>" not in drift_chart[1]


# -- it fits the page ----------------------------------------------------------------------------
MESOS_AGENT = "cd613e30-d8f1-4adf-91b7-584a2265b1f5-S1"  # what a real agent id looks like
PROBE = """<script>
var bad = [];
document.querySelectorAll('table').forEach(function (t, i) {
  var box = t.parentElement;
  if (!box.classList.contains('box')) bad.push(i + ':not in a box');
  else if (box.scrollWidth > box.clientWidth) bad.push(i + ':' + box.scrollWidth);
});
var d = document.documentElement;
var out = document.createElement('pre');
out.id = 'probe';
out.textContent = JSON.stringify({tables: document.querySelectorAll('table').length,
  page: d.scrollWidth <= d.clientWidth, bad: bad});
document.body.appendChild(out);
</script>"""


def overflow(chromium: str, page: str, tmp_path, width: int) -> dict:
    """Renders the page at `width` with a probe (the page's own CSP forbids scripts: the probe
    runs in a copy without it) and reports which tables' boxes overflow."""
    probe = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)
    copy = tmp_path / f"probe-{width}.html"
    copy.write_text(probe.replace("</body>", PROBE + "</body>"))
    seen = browse(
        chromium,
        copy.as_uri(),
        str(tmp_path / f"pp{width}"),
        f"--window-size={width},900",
        "--dump-dom",
    )
    found = re.search(r'<pre id="probe">([^<]*)</pre>', seen.stdout.decode())
    assert found, seen.stderr[-2000:]
    return json.loads(found.group(1).replace("&gt;", ">"))


def test_tables_fit_their_boxes(tmp_path, chromium):
    path = str(tmp_path / "log")
    with Ledger.open(path, durable=False) as ledger:
        ledger.task_created("web/0/g0", job="web", instance=0, time=T0)
        ledger.task_assigned("web/0/g0", agent_id=MESOS_AGENT, time=T0 + 1)
        long = {"agent": MESOS_AGENT, "source": "SOURCE_AGENT"}
        ledger.status_update(
            task_status(
                "web/0/g0",
                "TASK_FAILED",
                timestamp=T0 + 2,
                uuid="u1",
                reason="REASON_EXECUTOR_TERMINATED",
                message="Executor terminated: the container exited with status 137 (OOM)",
                **long,
            ),
            time=T0 + 2,
        )
        ledger.tick(now=T0 + 3)  # R-LIFECYCLE-RESCHEDULE
        ledger.dispatch(lambda command: None, now=T0 + 4)
    out = tmp_path / "wide.html"
    assert run("report", "--log", path, "--html", str(out), "--all-tasks").exit_code == 0
    page = out.read_text()
    fits = overflow(chromium, page, tmp_path, 1000)
    assert fits["tables"] > 5 and fits["bad"] == [] and fits["page"], fits
    narrow = overflow(chromium, page, tmp_path, 600)
    assert narrow["page"], narrow  # narrower than the report: its boxes scroll, not the page
