"""deploy/discord-voice-tutor.service: systemd accepts it as written, and it agrees with the bot's exit codes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bot.__main__ import EXIT_CONFIG

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "discord-voice-tutor.service"
INSTALLED_AT = "/opt/discord-voice-tutor"


def unit_settings() -> dict[str, str]:
    return dict(line.split("=", 1) for line in UNIT.read_text().splitlines()
                if "=" in line and not line.startswith(("#", "[")))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_verify_finds_nothing(tmp_path):
    """`systemd-analyze verify` on the unit (paths pointed at this checkout) prints no warning at all."""
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED_AT, str(ROOT)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_unit_runs_the_bot_from_its_folder_and_does_not_loop_on_bad_settings():
    """ExecStart is the venv's python -m bot in the working directory; a settings error (78) is not restarted."""
    settings = unit_settings()
    assert settings["WorkingDirectory"] == INSTALLED_AT
    assert settings["ExecStart"] == f"{INSTALLED_AT}/.venv/bin/python -m bot"
    assert settings["RestartPreventExitStatus"] == str(EXIT_CONFIG)
    assert settings["KillSignal"] == "SIGTERM"


def test_readme_installs_this_unit():
    """README's lines copy this file and enable it under its own name."""
    readme = (ROOT / "README.md").read_text()
    assert f"sudo cp deploy/{UNIT.name} /etc/systemd/system/" in readme
    assert "sudo systemctl enable --now discord-voice-tutor" in readme
    assert "sudo systemctl stop discord-voice-tutor" in readme
