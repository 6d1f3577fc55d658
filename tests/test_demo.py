"""The README's first command: `clearml-watchdog demo` runs the night and ends by itself within a minute."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.harness import WATCHDOG_CMD


@pytest.mark.slow
def test_demo_plays_the_night_and_ends_by_itself() -> None:
    started = time.monotonic()
    result = subprocess.run([*WATCHDOG_CMD, "demo"], capture_output=True, text=True, timeout=90)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert elapsed < 60
    out = result.stdout
    for alert in (
        "Machine lost: resnet50-imagenet",
        "Machine shut down: bert-large-finetune",
        "Aborted by a person: whisper-small-asr",
        "Training code failed: yolov8-coco",
        "Stopped by the ClearML server: unet-diffusion",
        "Recovered: resnet50-imagenet",
    ):
        assert alert in out, alert
    assert "gpu-ondemand" in out
    assert "exactly once" in out
    assert "Traceback" not in result.stderr
