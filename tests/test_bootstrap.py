"""make setup is idempotent: with the stamp current it runs nothing."""

from __future__ import annotations

import pytest

from stack.local import bootstrap


def test_current_stamp_means_no_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(cmd, **kw):
        raise AssertionError(f"setup ran {cmd} although nothing changed")

    monkeypatch.setattr(bootstrap, "run", forbidden)
    profile = "cpu"
    assert bootstrap.STAMP.read_text().strip() == bootstrap.stamp_for(profile)
    bootstrap.install_venv(profile)
    bootstrap.install_debian_packages()
    bootstrap.build_models()


def test_stamp_tracks_requirements() -> None:
    assert bootstrap.stamp_for("cpu") != bootstrap.stamp_for("gpu")


def test_needed_binaries_present() -> None:
    import shutil

    for binary in bootstrap.DEBIAN:
        assert shutil.which(binary), binary
