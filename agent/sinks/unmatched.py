"""``kvwatch replay --format unmatched``: what the parsers missed, by shape, safe to share."""

from __future__ import annotations

from typing import TextIO

from parsers.masking import masked, shape


class UnmatchedShapes:
    """``--format unmatched``: the shapes of lines that look like vLLM, LMCache or uvicorn lines but
    gave no event, counted, with one masked example each (nothing of a prompt or an id survives)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, str] = {}

    def note(self, line: str) -> None:
        key = shape(line)
        count = self.counts.get(key)
        if count is None:
            self.examples[key] = masked(line)
            count = 0
        self.counts[key] = count + 1

    def render(self, out: TextIO) -> None:
        total = sum(self.counts.values())
        out.write(f"# {total} lines that look like vLLM, LMCache or uvicorn lines gave no event, ")
        out.write(f"in {len(self.counts)} shapes (numbers as N; ids, quoted text and prompts masked)\n")
        for key, count in sorted(self.counts.items(), key=lambda item: (-item[1], item[0])):
            out.write(f"{count:>8}  {key}\n")
            example = self.examples[key]
            if example != key:
                out.write(f"{'':>8}  e.g. {example}\n")
