"""Shared pytest configuration: tests run in batch mode and never open windows."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("ROOT_BATCH", "1")

from tests import roundtrip_check


@pytest.fixture(scope="session")
def dask_client():
    """One local Dask cluster of two worker processes, shared by the tests that need one (starting
    a cluster costs seconds; tests compare counters before and after rather than absolute ones)."""
    distributed = pytest.importorskip("distributed")
    # ":0": the scheduler's HTTP server on a free port (with None it still tries 8787 and warns,
    # an error under the test settings, when another cluster on the machine holds that port)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def worker_pickling_stats(client) -> dict[str, dict[str, int]]:
    """sofie_root.serialization.pickling.stats of every worker of ``client``."""
    def stats() -> dict[str, int]:
        from sofie_root.serialization import pickling

        return dict(pickling.stats)

    return client.run(stats)


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
