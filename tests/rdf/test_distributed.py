"""Distributed RDataFrame on a local Dask cluster of two worker processes: the model file is shipped
to the workers, the functor code declared there, and the results equal the local run."""

from __future__ import annotations

import numpy as np
import pytest
import ROOT
import sofie_root.rdf as srdf

import sofie_root
from sofie_root import SofieError

distributed = pytest.importorskip("distributed")

INPUTS = {"particles": srdf.Columns(["pf_pt", "pf_eta", "pf_phi"], sort_by="pf_pt", pad=-1.0),
          "jet": ["jet_pt", "jet_eta"]}


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def dense_root(rdf_dir, dense_path):
    """The dense model in a .root file, with the columns it was trained on stored beside it."""
    path = rdf_dir / "dist_models.root"
    sofie_root.compile(dense_path).save(path, "dense", columns=["a", "b", "c"], overwrite=True)
    sofie_root.compile(dense_path).save(path, "other", columns=["b", "a", "c"], overwrite=True)
    return f"{path}:dense"  # a file holding two models: the workers must take the right one


USER_INIT = ("import ROOT\n"
             "ROOT.gInterpreter.Declare('#ifndef SOFIE_TEST_USER_INIT\\n#define SOFIE_TEST_USER_INIT\\n"
             "int sofie_test_user_flag = 7;\\n#endif')")


def graph(df, dense_root, tagger):
    df = srdf.define(df, "score", dense_root)  # columns from the file
    df = srdf.define(df, "probs", tagger, inputs=INPUTS, outputs="probs")
    df = df.Define("p0", "probs[0]").Filter("c > -4").Define("user_flag", "sofie_test_user_flag")
    return df.AsNumpy(["score", "p0", "b", "user_flag"]), df.Histo1D(("h", "score", 20, 0.0, 1.0), "score")


def test_distributed_equals_local(client, data_file, dense_root, tagger_path):
    tagger = sofie_root.compile(tagger_path)  # a Model object: shipped as generated code + weights
    # a user's own initialisation, registered before: it keeps running on the workers
    ROOT.RDF.Distributed.initialize(exec, USER_INIT)
    local, local_h = graph(ROOT.RDataFrame("Events", data_file), dense_root, tagger)
    ddf = ROOT.RDataFrame("Events", data_file, executor=client, npartitions=2)
    dist, dist_h = graph(ddf, dense_root, tagger)
    order_l, order_d = np.argsort(local["b"]), np.argsort(dist["b"])
    assert len(order_d) == len(order_l) > 1000
    for k in ("score", "p0"):
        np.testing.assert_array_equal(np.asarray(dist[k])[order_d], np.asarray(local[k])[order_l])
    assert np.all(np.asarray(dist["user_flag"]) == 7)
    assert [dist_h.GetBinContent(i) for i in range(22)] == [local_h.GetBinContent(i) for i in range(22)]
    workers = client.run(lambda: __import__("os").getpid())
    assert len(workers) == 2


def test_distributed_checks_columns_before_sending(client, data_file, dense_path):
    ddf = ROOT.RDataFrame("Events", data_file, executor=client, npartitions=2)
    with pytest.raises(SofieError, match="'zz' is not in the dataframe"):
        srdf.define(ddf, "score", dense_path, ["a", "b", "zz"])
