"""The runtime package never imports the training stack (poutyne, albumentations)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import sys
import streamseg
import streamseg.app, streamseg.cli, streamseg.sources, streamseg.sinks
import streamseg.overlay, streamseg.smoothing, streamseg.background
import streamseg.events, streamseg.stats
heavy = [m for m in ("poutyne", "albumentations", "training") if m in sys.modules]
print(",".join(heavy))
"""


def _probe(code: str) -> str:
    """Run ``code`` in a fresh interpreter; return what it printed."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_runtime_imports_neither_poutyne_nor_albumentations():
    heavy = _probe(PROBE)
    assert heavy == "", f"runtime imported {heavy}"


CLI_PROBE = """
import sys
from streamseg.cli import build_parser
build_parser().parse_args(["info", "model.safetensors"])
tools = [m for m in sys.modules if m.startswith("streamseg.evaluation.")]
print(",".join(sorted(tools)))
"""


def test_cli_parser_imports_no_tool():
    """Building the parser must not import evaluate-video or bench (each is large)."""
    tools = _probe(CLI_PROBE)
    assert tools == "", f"the parser imported {tools}"
