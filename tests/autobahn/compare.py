"""Compares an Autobahn (kosoku) report with the committed expectations.

Usage: python3 compare.py REPORT_DIR EXPECTED_JSON [--write]

Fails on any FAILED case, and on any case whose behaviour differs from the expected
one, as tokio-tungstenite's own CI does. With --write, records the report as expected.
"""

import json
import sys
from pathlib import Path


def outcomes(report_dir: Path) -> dict:
    index = json.loads((report_dir / "index.json").read_text())
    (cases,) = index.values()
    return {
        case: {"behavior": result["behavior"], "behaviorClose": result["behaviorClose"]}
        for case, result in cases.items()
    }


def case_key(case: str):
    return [int(part) for part in case.split(".")]


def main() -> int:
    report_dir, expected_path = Path(sys.argv[1]), Path(sys.argv[2])
    actual = outcomes(report_dir)
    if "--write" in sys.argv:
        ordered = {case: actual[case] for case in sorted(actual, key=case_key)}
        expected_path.write_text(json.dumps(ordered, indent=1) + "\n")
        print(f"recorded {len(actual)} cases in {expected_path}")
        return 0
    expected = json.loads(expected_path.read_text())
    problems = []
    for case in sorted(set(actual) | set(expected), key=case_key):
        got, want = actual.get(case), expected.get(case)
        if got is None:
            problems.append(f"{case}: not run")
        elif "FAILED" in got.values():
            problems.append(f"{case}: FAILED {got}")
        elif got != want:
            problems.append(f"{case}: expected {want}, got {got}")
    counts = {}
    for result in actual.values():
        counts[result["behavior"]] = counts.get(result["behavior"], 0) + 1
    summary = ", ".join(f"{count} {behavior}" for behavior, count in sorted(counts.items()))
    print(f"autobahn: {len(actual)} cases: {summary}")
    for problem in problems:
        print(f"autobahn: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
