"""Shared fixtures: paths to ../shared and a skip helper for when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from validation.shared import default_shared_dir

REPO = Path(__file__).resolve().parents[1]
SHARED = default_shared_dir()  # $MIDAS_REF_SHARED, else ../shared beside the repository


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the repository; tests needing it skip with a reason when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"reference folder {SHARED} not present (clone without ../shared)")
    return SHARED


def shared_file(*parts: str) -> Path:
    """Path of a file under ``../shared``; skips the calling test when the file is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference file {path} not present")
    return path
