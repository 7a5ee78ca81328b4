"""tests/fake_voice_server.py leaves nothing behind: a test run on a CI machine must not litter /tmp."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_certificate_folder_goes_with_the_process() -> None:
    """The self-signed certificate made once per test process is removed when that process exits."""
    code = "from tests.fake_voice_server import _certificate; print(_certificate()[0].parent)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    folder = Path(result.stdout.strip())
    assert folder.name.startswith("fake-voice-") and not folder.exists()
