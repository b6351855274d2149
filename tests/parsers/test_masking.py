"""Shapes of unread lines, as ``kvwatch replay --format unmatched`` shows them."""

from __future__ import annotations

import pytest

from parsers.envelope import strip_ansi
from parsers.masking import shape


@pytest.mark.parametrize(
    "prefix",
    ["", "\x1b[1;36m(APIServer pid=7)\x1b[0;0m ", "[1;36m(APIServer pid=7)[0;0m ", "^[[36m(APIServer pid=7)^[[m "],
)
def test_a_file_name_starting_with_m_survives_colour_codes_being_removed(prefix: str) -> None:
    """``[m`` is a bare reset only when no name follows it: ``[model.py:555]`` stays a file name."""
    line = prefix + "INFO 12-02 09:51:57 [model.py:555] Resolved architecture: LlamaForCausalLM"
    assert shape(line).endswith("INFO N-N N:N:N [model.py:N] Resolved architecture: LlamaForCausalLM")


@pytest.mark.parametrize(
    ("line", "plain"),
    [
        ("[32mINFO[m started [0m", "INFO started "),
        ("^[[1mbold^[[m [multiproc_executor.py:1] x", "bold [multiproc_executor.py:1] x"),
        ("\\x1b[mINFO [metrics.py:9] y", "INFO [metrics.py:9] y"),
    ],
)
def test_colour_residue_goes_and_bracketed_names_stay(line: str, plain: str) -> None:
    assert strip_ansi(line) == plain
