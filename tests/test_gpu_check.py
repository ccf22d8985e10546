"""`benchmarks/gpu_check.py --dry-run`: the GPU check's every part runs on the CPU at tiny sizes, prints
one table and writes it; a failing part, or one over its time budget, leaves its one line and the next
part still runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def gpu_check(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--threads", "1", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def table_rows(text: str) -> dict[tuple[str, str], list[str]]:
    """(part, what) -> [value, goal, note] of the Markdown table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 5 and cells[0] not in ("part", "---"):
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


def rate(value: str) -> float:
    match = re.match(r"([\d,.]+) (images|frames)/s", value)
    assert match, value
    return float(match.group(1).replace(",", ""))


def test_dry_run_diffusion_and_fid(tmp_path):
    out = tmp_path / "check.md"
    done = gpu_check("--only", "diffusion", "fid", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    written = out.read_text()
    assert written.startswith("# GPU check") and "DRY RUN" in written
    assert written in done.stdout  # the printed table is the written one
    rows = table_rows(written)
    assert rate(rows[("diffusion", "diffusion generator [fp32:4]")][0]) > 0
    assert rate(rows[("diffusion", "naive diffusers loop (fp32, one image per call)")][0]) > 0
    reference = rows[("fid", "FID features [fp32 (TF32 off)]")]
    assert rate(reference[0]) > 0 and "the reference" in reference[2]
    low = rows[("fid", "FID features [bf16 channels-last]")]
    fid = float(re.search(r"FID ([\d.]+)", low[2]).group(1))
    assert fid > 0 and re.search(r"rel\. diff to fp32 [\d.]+e[-+]\d+", low[2])
    assert "512 images read + PNG-decoded" in rows[("fid", "FID extractor")][2]
    assert not any(value[0] in ("FAILED", "TIMED OUT") for value in rows.values())


def test_dry_run_labelers_and_blender():
    done = gpu_check("--only", "labelers", "blender")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = table_rows(done.stdout)
    for kind in ("owlv2", "blip"):
        value, _, note = rows[("labelers", f"{kind} labeler, batched (2)")]
        assert rate(value) > 0 and "one at a time" in note
    (what, (value, _, note)), = [(k[1], v) for k, v in rows.items() if k[0] == "blender"]
    if value == "skipped":  # no render environment here: the row says what is missing
        assert "absent" in note
    else:
        assert rate(value) > 0


def test_a_failing_part_reports_one_line_and_the_next_part_runs():
    done = gpu_check("--only", "fid", "blender", "--device", "cuda:99")  # no such device, CPU build or not
    assert done.returncode == 0
    rows = table_rows(done.stdout)
    value, _, note = rows[("fid", "fid")]
    assert value == "FAILED" and re.search("cuda|CUDA|device", note) and "\n" not in note
    assert any(k[0] == "blender" for k in rows)  # the next part ran after the failure


def test_a_part_over_its_budget_is_stopped_and_the_table_still_written(tmp_path):
    out = tmp_path / "check.md"
    done = gpu_check("--only", "diffusion", "fid", "--budget-scale", "0.005", "--out", str(out), timeout=60)
    assert done.returncode == 0
    rows = table_rows(out.read_text())
    for part in ("diffusion", "fid"):
        value, _, note = rows[(part, part)]
        assert value == "TIMED OUT" and "budget" in note
