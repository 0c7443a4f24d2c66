"""The Python API contract: compile sources, infer checks, errors, several models per process."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

import sofie_root

from .ort_check import assert_matches_ort, make_model, value_info

RNG = np.random.default_rng(7)


def _mlp(name: str = "mlp", hidden: int = 16, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = {"W1": rng.standard_normal((7, hidden)).astype(np.float32),
             "b1": rng.standard_normal(hidden).astype(np.float32),
             "W2": rng.standard_normal((hidden, 2)).astype(np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "W2"], ["y"])]
    return make_model(nodes, [value_info("x", np.float32, ["N", 7])], [value_info("y", np.float32, ["N", 2])],
                      inits, name=name)


def test_compile_from_path_bytes_and_proto(tmp_path) -> None:
    proto = _mlp()
    path = tmp_path / "mlp.onnx"
    onnx.save(proto, path)
    x = RNG.standard_normal((5, 7)).astype(np.float32)
    results = [sofie_root.compile(src).infer(x)[0] for src in (proto, str(path), path, proto.SerializeToString())]
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    assert_matches_ort(proto, x, rtol=1e-5, atol=1e-5)


def test_external_data(tmp_path) -> None:
    proto = _mlp(hidden=300)
    path = tmp_path / "ext.onnx"
    onnx.save(_mlp(hidden=300), path, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data",
              size_threshold=0)
    assert (tmp_path / "ext.data").exists()
    x = RNG.standard_normal((3, 7)).astype(np.float32)
    np.testing.assert_allclose(sofie_root.compile(path)(x), sofie_root.compile(proto)(x))


def test_model_description() -> None:
    m = sofie_root.compile(_mlp())
    assert [(s.name, s.dtype, s.shape) for s in m.inputs] == [("x", np.dtype("float32"), ("N", 7))]
    assert [(s.name, s.shape) for s in m.outputs] == [("y", ("N", 2))]
    assert "struct Session" in m.source and m.namespace in m.source
    assert "x: float32[N, 7]" in repr(m)
    assert "Gemm" in sofie_root.supported_ops() and "MatMul" in sofie_root.supported_ops()


def test_batch_sizes_including_empty() -> None:
    proto = _mlp()
    m = sofie_root.compile(proto)
    for n in (1, 64, 3, 0):
        x = RNG.standard_normal((n, 7)).astype(np.float32)
        y = m(x)
        assert y.shape == (n, 2)
        if n:
            assert_matches_ort(proto, x, compiled=m, rtol=1e-5, atol=1e-5)


def test_float64_input_is_cast_and_named_inputs() -> None:
    m = sofie_root.compile(_mlp())
    x = RNG.standard_normal((2, 7))
    np.testing.assert_array_equal(m(x), m(x.astype(np.float32)))
    np.testing.assert_array_equal(m(x=x), m(x))


def test_input_errors_name_the_input() -> None:
    m = sofie_root.compile(_mlp())
    with pytest.raises(sofie_root.InputError, match=r"'x' expects shape \[N, 7\].*\[3, 8\]"):
        m(np.zeros((3, 8), np.float32))
    with pytest.raises(sofie_root.InputError, match="rank 2"):
        m(np.zeros(7, np.float32))
    with pytest.raises(sofie_root.InputError, match="takes 1 input"):
        m(np.zeros((1, 7), np.float32), np.zeros((1, 7), np.float32))
    with pytest.raises(sofie_root.InputError, match="expects float32"):
        m(np.array([["a"] * 7]))
    with pytest.raises(sofie_root.InputError, match="unknown input"):
        m(z=np.zeros((1, 7), np.float32))
    assert issubclass(sofie_root.InputError, sofie_root.SofieError)


def test_two_models_and_the_same_model_twice() -> None:
    a, b = _mlp(seed=1), _mlp(seed=2)
    ma, mb, ma2 = sofie_root.compile(a), sofie_root.compile(b), sofie_root.compile(a)
    assert ma.namespace != mb.namespace and ma.namespace == ma2.namespace
    x = RNG.standard_normal((4, 7)).astype(np.float32)
    np.testing.assert_array_equal(ma(x), ma2(x))
    assert not np.allclose(ma(x), mb(x))
    assert_matches_ort(b, x, compiled=mb, rtol=1e-5, atol=1e-5)


def test_unsupported_operators_are_all_listed_before_codegen() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("NoSuchOp", ["a"], ["b"], name="first_bad"),
             helper.make_node("Relu", ["b"], ["c"]),
             helper.make_node("AlsoMissing", ["c"], ["y"], name="second_bad", domain="com.example")]
    proto = make_model(nodes, [value_info("x", np.float32, [3])], [value_info("y", np.float32, [3])])
    proto.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(sofie_root.UnsupportedOperatorError) as info:
        sofie_root.compile(proto)
    msg = str(info.value)
    assert "NoSuchOp" in msg and "first_bad" in msg and "AlsoMissing" in msg and "second_bad" in msg
    assert "opset 17" in msg and "com.example" in msg
    assert [n[0] for n in info.value.nodes] == ["NoSuchOp", "AlsoMissing"]


def test_unsupported_variant_names_node() -> None:
    nodes = [helper.make_node("Sqrt", ["x"], ["y"], name="int_sqrt")]
    proto = make_model(nodes, [value_info("x", np.int32, [3])], [value_info("y", np.int32, [3])])
    with pytest.raises(sofie_root.UnsupportedOperatorError, match=r"int_sqrt.*int32"):
        sofie_root.compile(proto)


def test_malformed_and_missing_files(tmp_path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not protobuf\xff\xff\xff")
    with pytest.raises(sofie_root.ModelLoadError, match=r"bad.onnx"):
        sofie_root.compile(bad)
    with pytest.raises(sofie_root.ModelLoadError, match="no such file"):
        sofie_root.compile(tmp_path / "missing.onnx")
    with pytest.raises(sofie_root.ModelLoadError, match="not a valid ONNX"):
        sofie_root.compile(b"garbage" * 10)
    with pytest.raises(sofie_root.ModelLoadError):
        sofie_root.compile(12345)
    truncated = tmp_path / "trunc.onnx"
    truncated.write_bytes(_mlp().SerializeToString()[:60])
    with pytest.raises(sofie_root.SofieError, match=r"trunc.onnx"):
        sofie_root.compile(truncated)


def test_shape_mismatch_in_graph_is_an_error() -> None:
    nodes = [helper.make_node("Add", ["x", "w"], ["y"], name="bad_add")]
    proto = make_model(nodes, [value_info("x", np.float32, [3, 4])], [value_info("y", np.float32, None)],
                       {"w": np.zeros((5,), np.float32)})
    with pytest.raises(sofie_root.ShapeInferenceError, match=r"bad_add.*cannot be broadcast"):
        sofie_root.compile(proto)


HOSTILE = ['x"; system("rm -rf /"); //', "a\nb */ int main() {", "class", "*/", "namespace", "\\", "0abc",
           "weights", "arena", "in", "out", "sym"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_cannot_inject_code(name: str) -> None:
    w = RNG.standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("Mul", [name, name + "_w"], [name + "_m"], name=name),
             helper.make_node("Relu", [name + "_m"], [name + "out"], name=name + "*/")]
    proto = make_model(nodes, [value_info(name, np.float32, ["N", 4])], [value_info(name + "out", np.float32, None)],
                       {name + "_w": w}, name=name)
    m = sofie_root.compile(proto)
    code = "\n".join(line.split("//", 1)[0] for line in m.source.splitlines())  # names may appear in comments
    assert "rm -rf" not in code and "int main" not in code and "system(" not in code
    assert all("\n" not in line and "*/" not in line for line in m.source.splitlines() if "//" in line)
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    assert_matches_ort(proto, x, compiled=m)


def test_symbol_names_from_the_file_are_sanitised() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    proto = make_model(nodes, [value_info("x", np.float32, ["batch size; evil()", 2])],
                       [value_info("y", np.float32, None)])
    m = sofie_root.compile(proto)
    code = "\n".join(line.split("//", 1)[0] for line in m.source.splitlines())
    assert "evil()" not in code and "batch size" not in code
    np.testing.assert_array_equal(m(np.array([[-1, 2]], np.float32)), [[0, 2]])


def test_shape_inputs_specialise_at_first_call() -> None:
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"])]
    proto = make_model(nodes, [value_info("x", np.float32, [2, 6]), value_info("shape", np.int64, [2])],
                       [value_info("y", np.float32, None)])
    m = sofie_root.compile(proto)
    assert m.bound_inputs == ["shape"]
    x = RNG.standard_normal((2, 6)).astype(np.float32)
    assert m(x, np.array([3, 4])).shape == (3, 4)
    assert m(x, np.array([-1, 2])).shape == (6, 2)
    assert m(x, np.array([3, 4])).shape == (3, 4)
    with pytest.raises(sofie_root.ShapeInferenceError, match="Reshape"):
        m(x, np.array([5, 5]))


def test_graph_output_that_is_an_input_or_a_constant() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    proto = make_model(nodes, [value_info("x", np.float32, [2])],
                       [value_info("y", np.float32, None), value_info("x", np.float32, [2]),
                        value_info("c", np.float32, [2])], {"c": np.array([1.5, 2.5], np.float32)})
    m = sofie_root.compile(proto)
    y, x_out, c = m.infer(np.array([-1.0, 1.0], np.float32))
    np.testing.assert_array_equal(y, [0, 1])
    np.testing.assert_array_equal(x_out, [-1, 1])
    np.testing.assert_array_equal(c, [1.5, 2.5])


def test_symbolic_inner_dimension_is_checked_at_run_time() -> None:
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y"])]
    proto = make_model(nodes, [value_info("a", np.float32, [2, "K"]), value_info("b", np.float32, [3, 4])],
                       [value_info("y", np.float32, None)])
    m = sofie_root.compile(proto)
    a = RNG.standard_normal((2, 3)).astype(np.float32)
    b = RNG.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(m(a, b), a @ b, rtol=1e-5)
    with pytest.raises(sofie_root.SofieError, match="inner dimensions"):
        m(RNG.standard_normal((2, 5)).astype(np.float32), b)


@pytest.mark.parametrize("dtype", [np.float16, "bfloat16"])
def test_half_precision_models_keep_their_io_types(dtype) -> None:
    import ml_dtypes

    dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    w = RNG.standard_normal((4, 3)).astype(dt)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["r"]),
             helper.make_node("Cast", ["r"], ["y"], to=helper.np_dtype_to_tensor_dtype(dt))]
    elem = helper.np_dtype_to_tensor_dtype(dt)
    graph = helper.make_graph(nodes, "half", [helper.make_tensor_value_info("x", elem, ["N", 4])],
                              [helper.make_tensor_value_info("y", elem, None)],
                              [onnx.numpy_helper.from_array(w, "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    m = sofie_root.compile(proto)
    assert m.inputs[0].dtype == dt and m.outputs[0].dtype == dt
    x = RNG.standard_normal((5, 4)).astype(dt)
    y = m(x)
    assert y.dtype == dt
    expect = np.maximum(x.astype(np.float32) @ w.astype(np.float32), 0).astype(dt)
    np.testing.assert_allclose(y.astype(np.float32), expect.astype(np.float32), rtol=1e-2, atol=1e-2)


def test_profile_times_every_node() -> None:
    m = sofie_root.compile(_mlp())
    rows = m.profile(RNG.standard_normal((4, 7)).astype(np.float32), repeat=5)
    assert sorted(r[1] for r in rows) == sorted(n.op_type for n in m.graph.nodes)  # after the passes' fusion
    assert len(rows) == len(m.graph.nodes) >= 2
    assert all(t >= 0 for _, _, t in rows) and rows == sorted(rows, key=lambda r: -r[2])
    assert "fProfile" not in m.source  # the model itself carries no timing code


def test_same_model_from_two_paths_gets_the_same_namespace(tmp_path) -> None:
    proto = _mlp(seed=5)
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        onnx.save(proto, tmp_path / d / "m.onnx")
    assert sofie_root.compile(tmp_path / "a" / "m.onnx").namespace == sofie_root.compile(tmp_path / "b" / "m.onnx").namespace
