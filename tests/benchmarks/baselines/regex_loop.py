#!/usr/bin/env python3
"""Baseline: the least a Python log parser does -- a substring test and one regex per candidate line.

Prints the number of lines holding ``LMCache hit tokens`` and the sum of the
first number after it on each.  It counts echoed prompts that quote the text
too, which is why it is a speed floor, not a correct parser.
"""

import re
import sys

HIT = re.compile(r"LMCache hit tokens: (\d+)")


def main(path: str) -> None:
    count = hits = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if "LMCache hit tokens" in line:
                count += 1
                m = HIT.search(line)
                if m:
                    hits += int(m.group(1))
    print(count, hits)


if __name__ == "__main__":
    main(sys.argv[1])
