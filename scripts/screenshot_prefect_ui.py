"""Screenshot what a user watching the Prefect UI sees of a build: the flow run page (task runs,
logs) and the build-summary artifact (embedded preview), with headless Chromium.

    python scripts/screenshot_prefect_ui.py RECIPE --out screenshots/

Starts a local `prefect server start` on a free port (PREFECT_UI_API_URL pointed at its API), builds
RECIPE against it with the CLI, then writes flow-run.png (task-run graph and logs),
summary-artifact.png and, when the recipe has evaluators, report.png (its eval/report.html).
Needs Debian's chromium (`apt-get install chromium`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1440,1000", "--virtual-time-budget=20000"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"prefect server exited with code {server.returncode}")
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return
        except OSError:
            time.sleep(1)
    sys.exit(f"prefect server at {url} did not start in {timeout:.0f} s")


def screenshot(chromium: str, url: str, path: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={path}", url],
                       check=True, capture_output=True, timeout=120)
    print(f"{path}  <- {url}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--out", default="screenshots")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("chromium not found: apt-get install chromium")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    home = Path(tempfile.mkdtemp(prefix="prefect-home-"))
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": api}
    env.pop("PREFECT_API_URL", None)
    prefect = str(Path(sys.executable).with_name("prefect"))
    server = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(api, server)
        os.environ["PREFECT_API_URL"] = api
        synthloom = str(Path(sys.executable).with_name("synthloom"))
        subprocess.run([synthloom, "build", args.recipe, "--overwrite"], check=True, env={**env, "PREFECT_API_URL": api})
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowFilter, FlowFilterName
        from prefect.client.schemas.sorting import FlowRunSort

        with get_client(sync_client=True) as client:
            # The build's own run, not its newest subflow (a recipe with evaluators ends in one).
            run = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["build-dataset"])),
                                        sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
            summary = [a for a in client.read_latest_artifacts() if (a.key or "").endswith("-summary")]
        ui = f"http://127.0.0.1:{port}"
        screenshot(chromium, f"{ui}/runs/flow-run/{run.id}", out / "flow-run.png")  # graph and logs
        if summary:
            # read_latest_artifacts returns the key's collection; its page is the newest artifact's id.
            screenshot(chromium, f"{ui}/artifacts/artifact/{summary[0].latest_id}", out / "summary-artifact.png")
        from synthloom.recipe import load_recipe

        report = load_recipe(args.recipe).version_dir().resolve() / "eval" / "report.html"
        if report.exists():  # the evaluation report a recipe with evaluators writes
            screenshot(chromium, report.as_uri(), out / "report.png")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
