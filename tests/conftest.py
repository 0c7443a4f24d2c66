"""Shared pytest configuration: tests run in batch mode and never open windows."""

from __future__ import annotations

import os

os.environ.setdefault("ROOT_BATCH", "1")

import pytest

from tests import roundtrip_check


@pytest.fixture(autouse=True, scope="session")
def _every_model_round_trips():
    """Every Model the suite builds must survive the .root format (see tests/roundtrip_check.py)."""
    if not roundtrip_check.enabled():
        yield
        return
    from sofie_root.model import Model

    original = Model.__init__

    def init(self, graph, passes=None, *, _profile=False, **kwargs):
        original(self, graph, passes, _profile=_profile, **kwargs)
        if not _profile:
            roundtrip_check.check_model(self)

    Model.__init__ = init
    try:
        yield
    finally:
        Model.__init__ = original


def pytest_terminal_summary(terminalreporter):
    stats = roundtrip_check.STATS
    if stats["checked"]:
        terminalreporter.write_line(f"round-trip check: {stats['checked']} compiled models went through the "
                                    f".root format ({stats['seconds']:.1f} s)")
