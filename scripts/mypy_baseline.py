"""Run mypy and fail only on findings that are not in requirements/mypy-baseline.txt (the known ones).

    python scripts/mypy_baseline.py            # exit 1 and list them if there are new findings
    python scripts/mypy_baseline.py --update   # rewrite the baseline (after fixing some, to lock the gain in)

Findings are compared without their line numbers, so edits elsewhere in a file do not make old ones look new.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "requirements" / "mypy-baseline.txt"
_LINE = re.compile(r"^(?P<path>[^:\s]+\.py):\d+(?::\d+)?: error: (?P<rest>.*)$")


def findings() -> collections.Counter[str]:
    res = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "--no-pretty"], cwd=REPO,
                         capture_output=True, text=True)
    if res.returncode not in (0, 1):
        sys.exit(f"mypy failed to run:\n{res.stdout}{res.stderr}")
    out: collections.Counter[str] = collections.Counter()
    for line in res.stdout.splitlines():
        m = _LINE.match(line)
        if m:
            out[f"{m['path']}: {m['rest']}"] += 1
    return out


def main(argv: list[str]) -> int:
    now = findings()
    if "--update" in argv:
        BASELINE.write_text("".join(f"{k}\n" * n for k, n in sorted(now.items())))
        print(f"mypy baseline: {sum(now.values())} known finding(s) written to {BASELINE.relative_to(REPO)}")
        return 0
    known = collections.Counter(BASELINE.read_text().splitlines()) if BASELINE.exists() else collections.Counter()
    new = now - known
    fixed = known - now
    if fixed:
        print(f"mypy: {sum(fixed.values())} known finding(s) are gone; run scripts/mypy_baseline.py --update")
    if new:
        print(f"mypy: {sum(new.values())} new finding(s):")
        for k in sorted(new):
            print("  " + k)
        return 1
    print(f"mypy: no new findings ({sum(now.values())} known, see {BASELINE.relative_to(REPO)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
