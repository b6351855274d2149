"""The source review of a vLLM release ``make compat`` cannot run: on two small wheels made here (real ``vllm``
wheels are 240 MB; the review of real ones is run by hand, as the README says)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from tests.compat.review_sources import formats, logging_setup_changes, rendered, review, verdict

OLD_ENGINE = """
import logging
logger = logging.getLogger(__name__)

def step(request_id, seconds):
    logger.info("Added request %s.", request_id)
    logger.info_once("Loading drafter model...")
    logger.debug("Nothing kvwatch reads %d", 1)
    logger.info(f"Engine {0:03d}: idle for {seconds}s")
"""

NEW_ENGINE = """
import logging
logger = logging.getLogger(__name__)

def step(request_id, seconds):
    logger.info("Added request %s.", request_id)
    logger.info("Engine %s - rejecting request %s.", "faulted", request_id)
    logger.warning("Request %s failed (bad request): " + "%s.", request_id, "too long")
    logger.debug("Nothing else kvwatch reads %d", 1)
    logger.info(f"Engine {0:03d}: idle for {seconds}s")
"""


def _wheel(path: Path, modules: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, source in modules.items():
            archive.writestr(name, source)
        archive.writestr("vllm-0.0.0.dist-info/METADATA", "Name: vllm\n")
    return path


def test_the_formats_of_the_families_added_and_removed_are_listed_with_what_kvwatch_reads(tmp_path: Path) -> None:
    old = formats(_wheel(tmp_path / "old.whl", {"vllm/v1/engine/async_llm.py": OLD_ENGINE, "vllm/broken.py": "("}))
    new = formats(_wheel(tmp_path / "new.whl", {"vllm/v1/engine/async_llm.py": NEW_ENGINE}))
    assert ("info", "Engine {}: idle for {}s") in new  # an f-string's fields, as placeholders
    assert ("info", "Loading drafter model...") in old  # a call printed once, at its level
    rows = review(old, new)
    assert rows == [
        ("+", "vllm/v1/engine/async_llm.py", "Engine %s - rejecting request %s.", "no event"),
        ("+", "vllm/v1/engine/async_llm.py", "Request %s failed (bad request): %s.", "request_failed"),
        ("-", "vllm/v1/engine/async_llm.py", "Loading drafter model...", "no longer printed"),
    ]  # the debug lines: first words no family reads; the unchanged ones: not listed


def test_a_rendered_format_is_a_vllm_line_with_sample_values() -> None:
    line = rendered("warning", "vllm/v1/core/kv_cache_utils.py", "%s KV cache size: %s tokens")
    assert line == "WARNING 12-05 10:00:00 [kv_cache_utils.py:1] x KV cache size: x tokens"
    line = rendered("info", "vllm/v1/engine/async_llm.py", "Aborted request(s) %s.")
    assert verdict(line) == "request_aborted"
    assert verdict(rendered("info", "vllm/x.py", "Some line %.2f%% of %(name)s")) == "no event"


def test_a_change_of_the_logging_set_up_is_named(tmp_path: Path) -> None:
    setup = {"vllm/logger.py": "_FORMAT = '%(levelname)s %(asctime)s [%(fileinfo)s:%(lineno)d] %(message)s'\n"}
    old = _wheel(tmp_path / "old.whl", {**setup, "vllm/logging_utils/formatter.py": "A = 1\n"})
    same = _wheel(tmp_path / "same.whl", {**setup, "vllm/logging_utils/formatter.py": "A = 1\n"})
    new = _wheel(tmp_path / "new.whl", {**setup, "vllm/logging_utils/formatter.py": "A = 2\n", "vllm/other.py": ""})
    assert logging_setup_changes(old, same) == []
    assert logging_setup_changes(old, new) == ["vllm/logging_utils/formatter.py"]
