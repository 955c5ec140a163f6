"""Print one table of every chaos report in a directory (what `make chaos`
shows at the end): python3 tests/chaos/summary.py build/chaos"""

import glob
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import test_chaos  # noqa: E402


def main(argv):
    if len(argv) != 1:
        print("usage: summary.py DIR", file=sys.stderr)
        return 2
    reports = []
    for path in sorted(glob.glob(os.path.join(argv[0], "chaos-*.json"))):
        with open(path) as f:
            reports.append(json.load(f))
    if not reports:
        print("no chaos reports in %s" % argv[0])
        return 1
    print("\n# chaos: every scenario (JSON in %s)" % argv[0])
    print(test_chaos.table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
