"""Mean and 95 % t-interval over seeds of `bench_dcgan.py fashion` runs, one log per seed.

    python benchmarks/summarize_dcgan_seeds.py /tmp/runs/dcgan-s0.log /tmp/runs/dcgan-s1.log /tmp/runs/dcgan-s2.log

Reads the result lines each run prints ("off: 60000 images, ... CAS 0.7749 TRTR 0.8940 CAS/TRTR 0.867 ...;
FID 37.09, precision 0.768 recall 0.435 ...; near-copy fraction 0.0016 ...") and prints one Markdown row
per filter setting: mean +- half-width of the 95 % Student-t interval, and the per-seed values.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from synthloom.evaluators.augment import t_interval  # noqa: E402

ROW = re.compile(r"^\s{2}(?P<setting>off|top \d+% per class)(?: \(min_quality [^)]*\))?: (?P<rows>\d+) images.*?"
                 r"CAS (?P<cas>[\d.]+) TRTR (?P<trtr>[\d.]+) CAS/TRTR (?P<ratio>[\d.]+).*?FID (?P<fid>[\d.]+), "
                 r"precision (?P<precision>[\d.]+) recall (?P<recall>[\d.]+).*?near-copy fraction (?P<copies>[\d.]+)")
COLUMNS = ["cas", "trtr", "ratio", "fid", "precision", "recall", "copies"]
HEADERS = ["CAS", "TRTR", "**CAS/TRTR**", "FID (domain CNN)", "precision", "recall", "near-copy fraction"]


def rows_of(log: Path) -> dict[tuple[str, int], dict[str, float]]:
    """(setting, rows) -> its numbers, for one run's log."""
    found = {}
    for line in log.read_text().splitlines():
        match = ROW.match(line)
        if match:
            found[(match["setting"], int(match["rows"]))] = {c: float(match[c]) for c in COLUMNS}
    if not found:
        raise SystemExit(f"{log}: no result lines of bench_dcgan.py fashion in it")
    return found


def cell(values: list[float], digits: int) -> str:
    ci = t_interval(values)
    half = f" ± {ci['ci_high'] - ci['mean']:.{digits}f}" if ci["ci_high"] is not None else ""
    return f"{ci['mean']:.{digits}f}{half} ({', '.join(f'{v:.{digits}f}' for v in values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("logs", nargs="+", type=Path, help="one bench_dcgan.py fashion log per seed")
    args = parser.parse_args()
    runs = [rows_of(log) for log in args.logs]
    settings = [key for key in runs[0] if all(key in run for run in runs)]
    print(f"{len(runs)} runs; each cell: mean ± half-width of the 95 % t-interval (per-run values)\n")
    print("| filter | rows | " + " | ".join(HEADERS) + " |")
    print("| --- " * (len(HEADERS) + 2) + "|")
    for setting, rows in settings:
        cells = [cell([run[(setting, rows)][c] for run in runs], 2 if c == "fid" else 4 if c == "copies" else 3)
                 for c in COLUMNS]
        print(f"| {setting} | {rows:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
