"""Headless Chromium for the report tests: find it (installing Debian's package when missing)
and load a page with nothing downloaded and no network use.

Images are checked from inside the page: a copy of the HTML gets a small script that, once
the page has loaded, writes each image's ``complete``/``naturalWidth`` into the DOM, and
``--dump-dom`` returns that DOM. No DevTools client, no browser download.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]
CHECK_ID = "posebatch-image-check"
CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var out = imgs.map(function (i) {
    return {alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight};
  });
  var pre = document.createElement('pre');
  pre.id = '@ID@';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>""".replace("@ID@", CHECK_ID)


def find() -> str | None:
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def ensure_installed() -> str:
    """The Chromium binary; installs Debian's ``chromium`` with apt-get when it is missing."""
    found = find()
    if found:
        return found
    if not shutil.which("apt-get"):
        pytest.fail("headless Chromium is needed and there is no apt-get to install it: "
                    "install a chromium package (Debian: `apt-get install -y chromium`)")
    if os.geteuid() != 0:
        pytest.fail("headless Chromium is needed: run `sudo apt-get install -y chromium` "
                    "(the tests install it only when running as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "chromium"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if run.returncode != 0:  # stale or missing package lists
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True,
                       timeout=600)
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    found = find()
    if run.returncode != 0 or not found:
        tail = (run.stderr or run.stdout).strip().splitlines()[-3:]
        pytest.fail(f"could not install chromium with apt-get: {' | '.join(tail)}")
    return found


def _run(binary: str, profile: Path, args: list[str], timeout: float = 120) -> str:
    profile.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(profile)}
    run = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args],
                         capture_output=True, text=True, timeout=timeout, env=env)
    if run.returncode != 0:
        raise AssertionError(f"chromium failed ({run.returncode}): {run.stderr[-2000:]}")
    return run.stdout


def dump_dom(binary: str, page: Path, profile: Path) -> str:
    """The page's DOM after load (scripts run; virtual time lets load handlers finish)."""
    return _run(binary, profile, ["--virtual-time-budget=10000", "--dump-dom",
                                  page.resolve().as_uri()])


def image_report(binary: str, page: Path, work: Path) -> list[dict]:
    """Load a copy of ``page`` with the check script; one dict per ``<img>``."""
    html = page.read_text(encoding="utf-8")
    probe = work / f"{page.stem}.probe.html"
    probe.write_text(html.replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    dom = dump_dom(binary, probe, work / "profile-probe")
    match = re.search(rf'<pre id="{CHECK_ID}">(.*?)</pre>', dom, re.S)
    if not match:
        raise AssertionError("the image check script did not run (no result in the DOM)")
    text = match.group(1).replace("&quot;", '"').replace("&amp;", "&")
    return json.loads(text)


def screenshot(binary: str, page: Path, out: Path, profile: Path,
               size: tuple[int, int] = (1200, 2400)) -> Path:
    _run(binary, profile, [f"--screenshot={out}", f"--window-size={size[0]},{size[1]}",
                           "--virtual-time-budget=5000", page.resolve().as_uri()])
    return out


def page_text(dom: str) -> str:
    """Visible-ish text of a DOM dump (tags stripped, whitespace collapsed)."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", dom)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return re.sub(r"\s+", " ", text)
