"""Shared pytest configuration: tests run in batch mode and never open windows."""

from __future__ import annotations

import os

os.environ.setdefault("ROOT_BATCH", "1")
