"""Pickled models: the IR and weights travel, the receiving process compiles them again (once per
process) and gives the sender's results; in-process, in spawned processes and on a Dask cluster."""

from __future__ import annotations

import multiprocessing
import pickle
from collections import defaultdict

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from sofie_root.serialization import pickling

import sofie_root
from sofie_root import SofieError

from . import pickle_helpers as ph


def _x(n: int = 33, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 7)).astype(np.float32)


@pytest.fixture
def fresh_cache():
    pickling.clear_cache()
    yield
    pickling.clear_cache()


def test_roundtrip_recompiles_once_and_agrees(fresh_cache) -> None:
    model = sofie_root.compile(ph.mlp())
    x = _x()
    np.testing.assert_allclose(model(x), ph.reference(x), rtol=1e-5, atol=1e-6)
    data = pickle.dumps(model)
    before = dict(pickling.stats)
    again = pickle.loads(data)
    assert again is not model and again.hash == model.hash and again.backend == model.backend
    np.testing.assert_array_equal(again(x), model(x))  # the same generated code: bit for bit
    assert again.inputs == model.inputs and again.outputs == model.outputs
    third = pickle.loads(data)  # cached per process by content hash: no second compilation
    assert third is again
    assert pickling.stats["compiled"] == before["compiled"] + 1
    assert pickling.stats["cache_hits"] == before["cache_hits"] + 1


def test_root_file_model_keeps_column_hints(tmp_path, fresh_cache) -> None:
    path = tmp_path / "m.root"
    sofie_root.compile(ph.mlp()).save(path, "mlp", columns=[f"f{i}" for i in range(7)])
    model = sofie_root.load(path)
    again = pickle.loads(pickle.dumps(model))
    assert again.column_hints == {"x": [f"f{i}" for i in range(7)]}
    np.testing.assert_array_equal(again(_x()), model(_x()))


def test_native_backend_pickles_as_native(fresh_cache) -> None:
    from sofie_root.jit import native

    try:
        native.compiler()
    except SofieError:
        pytest.skip("no C++ compiler on this machine (CI has one)")
    model = sofie_root.compile(ph.mlp(seed=3), backend="native")
    again = pickle.loads(pickle.dumps(model))
    assert again.backend == "native"
    np.testing.assert_array_equal(again(_x()), model(_x()))


def test_specializing_model_pickles_its_onnx() -> None:
    # the Reshape target is a graph input: compiled at the first call, per value of `shape`
    g = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("Neg", ["r"], ["y"])],
                          "reshape", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 6]),
                                      helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = sofie_root.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    assert isinstance(model, sofie_root.model.SpecializingModel)
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    model(x, np.array([3, 8]))  # a variant compiled before pickling is not shipped
    again = pickle.loads(pickle.dumps(model))
    assert isinstance(again, sofie_root.model.SpecializingModel) and again.bound_inputs == ["shape"]
    for shape in ([8, 3], [2, 12]):
        np.testing.assert_array_equal(again(x, np.array(shape)), -x.reshape(shape))


def test_user_defined_operator_needs_registration_on_arrival(fresh_cache) -> None:
    model = sofie_root.compile(ph.mlp(custom=True))
    x = _x()
    np.testing.assert_allclose(model(x), ph.reference(x, custom=True), rtol=1e-5, atol=1e-6)
    data = pickle.dumps(model)
    pickling.clear_cache()
    sofie_root.unregister_operator("Shift", ph.DOMAIN)
    try:
        placeholder = pickle.loads(data)  # unpickling itself must not raise (it would kill a worker)
        for use in (lambda: placeholder(x), lambda: placeholder.infer(x), lambda: placeholder.inputs):
            with pytest.raises(sofie_root.UnsupportedOperatorError, match=r"test\.pickle::Shift.*register_operator"):
                use()
        assert pickle.loads(pickle.dumps(placeholder)) is not placeholder  # ships the original payload
    finally:
        ph.register()
    np.testing.assert_array_equal(pickle.loads(data)(x), model(x))


def test_corrupt_payload_is_a_sofie_error_at_first_use(fresh_cache) -> None:
    kind, version, backend, text, blob = pickling.model_payload(sofie_root.compile(ph.mlp()))
    bad_blob = bytearray(blob)
    bad_blob[5] ^= 0xFF
    for payload, match in (((kind, version, backend, text, bytes(bad_blob)), "checksum"),
                           ((kind, version, backend, text.replace('"Relu"', '"Tanh"'), blob), "checksum"),
                           ((kind, version + 1, backend, text, blob), "incompatible")):
        model = pickling.restore(payload)  # no exception while unpickling (it would kill a worker)
        assert isinstance(model, pickling.Unrebuilt)
        with pytest.raises(SofieError, match=match):
            model(_x())


def _equal_to_local(results, model, xs, custom) -> dict[int, dict]:
    per_process: dict[int, dict] = defaultdict(dict)
    for (pid, y, stats), x in zip(results, xs):
        np.testing.assert_array_equal(y, model(x))
        np.testing.assert_allclose(y, ph.reference(x, custom=custom), rtol=1e-5, atol=1e-6)
        per_process[pid] = stats
    return per_process


def test_spawned_processes_give_local_results() -> None:
    models = [sofie_root.compile(ph.mlp()), sofie_root.compile(ph.mlp(custom=True))]
    xs = [_x(n, seed=n) for n in (1, 5, 64, 7, 2, 9)]
    tasks = [(models[k % 2], x) for k, x in enumerate(xs)]
    functor = sofie_root.functor(models[0], ph.FUNCTOR_COLUMNS)  # an RDataFrame functor pickles too
    local_pid, local_rows = ph.run_functor(functor)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(ph.run, tasks, chunksize=1)
        remote_pid, remote_rows = pool.apply(ph.run_functor, (functor,))
    assert remote_pid != local_pid
    np.testing.assert_array_equal(remote_rows, local_rows)
    x = ph.functor_inputs(6)
    np.testing.assert_allclose(remote_rows, ph.reference(x), rtol=1e-5, atol=1e-6)
    for k in (0, 1):
        _equal_to_local(results[k::2], models[k], xs[k::2], custom=bool(k))
    last = {pid: stats for pid, _, stats in results}
    for stats in last.values():  # each process compiled each model at most once
        assert stats["compiled"] <= 2


def test_dask_cluster_gives_local_results(dask_client) -> None:
    from tests.conftest import worker_pickling_stats

    model = sofie_root.compile(ph.mlp(custom=True, seed=5))
    xs = [_x(n, seed=n) for n in (3, 40, 1, 17)]
    dask_client.run(ph.register)  # the user-defined operator, registered on every worker first
    before = worker_pickling_stats(dask_client)
    workers = sorted(before)
    assert len(workers) == 2
    futures = [dask_client.submit(ph.run, model, x, workers=[workers[k % 2]], pure=False) for k, x in enumerate(xs)]
    results = dask_client.gather(futures)
    for (_, y, _), x in zip(results, xs):
        np.testing.assert_array_equal(y, model(x))
        np.testing.assert_allclose(y, ph.reference(x, custom=True, seed=5), rtol=1e-5, atol=1e-6)
    after = worker_pickling_stats(dask_client)
    assert len({pid for pid, _, _ in results}) == 2
    for w in workers:  # each worker compiled the model once, the other tasks found it cached
        assert after[w]["compiled"] - before[w]["compiled"] == 1
        assert after[w]["cache_hits"] - before[w]["cache_hits"] == 1


def test_onnx_helpers_stay_valid() -> None:
    onnx.checker.check_model(ph.mlp(custom=False))
