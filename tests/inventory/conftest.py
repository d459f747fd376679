from __future__ import annotations

import shutil

import pytest


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (see scripts/apt-packages.txt)")
    return path
