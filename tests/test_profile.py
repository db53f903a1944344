"""Profile selection: PROFILE wins; otherwise a working nvidia-smi means GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack.profile import gpu_present, select


def test_explicit_profile_wins() -> None:
    assert select({"PROFILE": "gpu"}, detect=lambda: False) == "gpu"
    assert select({"PROFILE": "CPU"}, detect=lambda: True) == "cpu"


def test_invalid_profile_is_named() -> None:
    with pytest.raises(ValueError, match="tpu"):
        select({"PROFILE": "tpu"})


def test_detection_decides_when_unset() -> None:
    assert select({}, detect=lambda: True) == "gpu"
    assert select({}, detect=lambda: False) == "cpu"


def _fake_smi(tmp_path: Path, body: str) -> str:
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n{body}\n")
    smi.chmod(0o755)
    return str(smi)


def test_gpu_present_reads_nvidia_smi(tmp_path: Path) -> None:
    listing = _fake_smi(tmp_path, 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-x)"')
    assert gpu_present(which=lambda _: listing)


def test_failing_nvidia_smi_means_cpu(tmp_path: Path) -> None:
    broken = _fake_smi(tmp_path, 'echo "NVIDIA-SMI has failed" >&2; exit 9')
    assert not gpu_present(which=lambda _: broken)
    assert not gpu_present(which=lambda _: None)
