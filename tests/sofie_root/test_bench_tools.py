"""The benchmark's measuring tools: the FLOP counter (benchmarks/flops.py) against hand-counted
small graphs, and the peak kernels (benchmarks/peak.py) against numpy sums. No timings here."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import sofie_root
from benchmarks import flops, peak
from sofie_root.frontends.onnx import convert_model

from .ort_check import make_model, value_info

F = np.float32


def _graph(nodes, inputs, outputs, inits=None, opset=17):
    return convert_model(make_model(nodes, inputs, outputs, inits, opset=opset), "test", None)


def _w(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(F)


def test_gemm_symbolic_batch_and_transposes() -> None:
    # [N, 7] x [300, 7]^T: 7 * 300 multiply-adds per row; the Relu and Add count nothing
    g = _graph([helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
                helper.make_node("Relu", ["h"], ["r"]),
                helper.make_node("Gemm", ["r", "w2"], ["y"], transA=0)],
               [value_info("x", F, ("N", 7))], [value_info("y", F, None)],
               {"w": _w(300, 7), "b": _w(300), "w2": _w(300, 2)})
    assert flops.total(g, {"N": 3}) == 2 * 3 * (7 * 300 + 300 * 2)
    assert flops.total(g, {"N": 1}) == 2 * (7 * 300 + 300 * 2)
    with pytest.raises(ValueError, match=r"Gemm node.*needs values for \['N'\]"):
        flops.total(g)


def test_gemm_trans_a() -> None:
    g = _graph([helper.make_node("Gemm", ["a", "b"], ["y"], transA=1, transB=1)],
               [value_info("a", F, (5, 4)), value_info("b", F, (6, 5))], [value_info("y", F, None)])
    assert flops.total(g) == 2 * 4 * 5 * 6  # A^T is [4, 5], B^T is [5, 6]


def test_batched_matmul_with_broadcast() -> None:
    g = _graph([helper.make_node("MatMul", ["a", "b"], ["y"])],
               [value_info("a", F, (2, 4, 5)), value_info("b", F, (5, 6))], [value_info("y", F, None)])
    assert flops.total(g) == 2 * (2 * 4 * 6 * 5)


def test_conv_grouped_and_transposed() -> None:
    g = _graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),          # [1, 6, 8, 8]
                helper.make_node("Conv", ["c", "wg"], ["d"], group=3),                   # [1, 3, 6, 6]
                helper.make_node("ConvTranspose", ["d", "wt"], ["y"], strides=[2, 2])],  # [1, 4, 13, 13]
               [value_info("x", F, (1, 3, 8, 8))], [value_info("y", F, None)],
               {"w": _w(6, 3, 3, 3), "wg": _w(3, 2, 3, 3), "wt": _w(3, 4, 3, 3)})
    conv = 6 * 8 * 8 * (3 * 3 * 3)      # every output: C_in * kH * kW
    grouped = 3 * 6 * 6 * (2 * 3 * 3)   # C_in / group = 2 channels per output
    transposed = 3 * 6 * 6 * (4 * 3 * 3)  # every input element is spread over C_out * kH * kW outputs
    assert flops.count(g) == {"0:Conv:c": 2 * conv, "1:Conv:d": 2 * grouped, "2:ConvTranspose:y": 2 * transposed}


@pytest.mark.parametrize("op, gates", [("RNN", 1), ("GRU", 3), ("LSTM", 4)])
def test_recurrent(op: str, gates: int) -> None:
    seq, batch, inp, hid, dirs = 5, 2, 4, 8, 2
    g = _graph([helper.make_node(op, ["x", "w", "r"], ["y"], hidden_size=hid, direction="bidirectional")],
               [value_info("x", F, (seq, batch, inp))], [value_info("y", F, None)],
               {"w": _w(dirs, gates * hid, inp), "r": _w(dirs, gates * hid, hid)})
    assert flops.total(g) == 2 * seq * batch * dirs * gates * hid * (inp + hid)


def test_attention_4d() -> None:
    g = _graph([helper.make_node("Attention", ["q", "k", "v"], ["y"])],
               [value_info("q", F, (1, 2, 3, 4)), value_info("k", F, (1, 2, 5, 4)), value_info("v", F, (1, 2, 5, 6))],
               [value_info("y", F, None)], opset=23)
    # Q K^T: 3 x 5 scores of length-4 dots; then 3 x 6 outputs summing 5 terms; per head
    assert flops.total(g) == 2 * 2 * (3 * 5 * 4 + 3 * 6 * 5)


def test_einsum() -> None:
    g = _graph([helper.make_node("Einsum", ["a", "b"], ["y"], equation="bij,bjk->bik"),
                helper.make_node("Einsum", ["y"], ["z"], equation="bik->b")],
               [value_info("a", F, (2, 3, 4)), value_info("b", F, (2, 4, 5))], [value_info("z", F, None)])
    assert flops.total(g) == 2 * (2 * 3 * 4 * 5)  # the one-operand sum has no products


def test_compiled_graph_counts_the_same() -> None:
    # the passes rewrite Gemm (pre-transposed weights, fused activations): the count must not change
    proto = make_model([helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
                        helper.make_node("Relu", ["h"], ["y"])],
                       [value_info("x", F, ("N", 7))], [value_info("y", F, None)],
                       {"w": _w(30, 7), "b": _w(30)})
    model = sofie_root.compile(proto.SerializeToString())
    assert flops.total(model.graph, {"N": 4}) == 2 * 4 * 7 * 30
    assert flops.weight_bytes(model.graph) == (30 * 7 + 30) * 4


def test_compiled_matmul_add_activation_counts_the_same() -> None:
    # MatMul + Add + Gelu may become one fused node: still one product of [N, 5, 16] x [16, 32]
    proto = make_model([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
                        helper.make_node("Relu", ["a"], ["y"])],
                       [value_info("x", F, ("N", 5, 16))], [value_info("y", F, None)],
                       {"w": _w(16, 32), "b": _w(32)})
    assert flops.total(sofie_root.compile(proto.SerializeToString()).graph, {"N": 2}) == 2 * 2 * 5 * 16 * 32


def test_compiled_lstm_counts_the_same() -> None:
    # the passes may store the recurrent weights transposed: the count comes from X and hidden_size
    seq, inp, hid = 6, 5, 8
    proto = make_model([helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=hid)],
                       [value_info("x", F, (seq, "N", inp))], [value_info("y", F, None)],
                       {"w": _w(1, 4 * hid, inp), "r": _w(1, 4 * hid, hid)})
    expected = 2 * seq * 3 * 4 * hid * (inp + hid)
    assert flops.total(convert_model(proto, "lstm", None), {"N": 3}) == expected
    assert flops.total(sofie_root.compile(proto.SerializeToString()).graph, {"N": 3}) == expected


def test_weight_bytes_ignores_integer_constants() -> None:
    g = _graph([helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["y"])],
               [value_info("x", F, (2, 3))], [value_info("y", F, None)],
               {"s": np.array([3, 2], dtype=np.int64), "w": _w(2, 5)})
    assert flops.weight_bytes(g) == 2 * 5 * 4


@pytest.mark.parametrize("compiler", peak.compilers())
def test_peak_kernels_read_every_element(compiler: str) -> None:
    x = np.random.default_rng(1).random(1000 + 77, dtype=np.float32)  # not a multiple of the unroll
    for width in ("stream512", "stream256"):
        if width not in peak._kernels(compiler):
            continue
        seconds, total = peak.stream_sum(x, 3, width, compiler)
        assert seconds >= 0
        np.testing.assert_allclose(total, 3 * x.astype(np.float64).sum(), rtol=1e-5)
    figures = peak.fma_peak(compiler, reps=1, seconds=0.01)
    assert figures["peak"] == max(v for k, v in figures.items() if k != "peak") > 0


def test_readme_speed_summary_from_json(tmp_path) -> None:
    # the README's block is rebuilt from the runs' JSON: ratios, counts and the slowest models come
    # from the data given, and only the text between the markers changes
    from benchmarks import readme

    ops = {"meta": {"date": "2026-01-02T03:04:05+00:00", "onnxruntime": "9.9", "load_start": 0.5, "load_end": 1.5},
           "summary": {"timed": 3, "geomean_net": 2.0, "below_1": 1,
                       "slowest": [[0.5, "Tanh (b1)"], [2.0, "Relu (b256)"], [4.0, "Exp (b1)"]]}}
    corpus = {"machine": {"date": "2026-01-02T03:04:05+00:00", "onnxruntime": "9.9", "cpu": "cpu",
                          "loadavg_start": [0.25]},
              "models": [{"model": "a", "ort_run_over_infer_b1": 2.0, "ort_run_over_infer_b256": 0.5},
                         {"model": "b", "ort_run_over_infer_b1": 8.0, "ort_run_over_infer_b256": 2.0}]}
    block = readme.render(ops, corpus)
    assert "batch 1** (`make bench`, 2 HEP networks, ORT run / `infer`): geometric mean **4.00**, 0 of 2 slower" in block
    assert "batch 256** (`make bench`, 2 HEP networks, ORT run / `infer`): geometric mean **1.00**, 1 of 2 slower" in block
    assert "the slowest: a 0.50, b 2.00" in block
    assert "geometric mean **2.00**, 1 of 3 below 1.0. The slowest 15: Tanh (b1) 0.50, Relu (b256) 2.00" in block
    assert "C++ against C++" not in block  # a run without the C API column
    ops["summary"].update({"timed_c": 2, "geomean_c": 3.0, "below_1_c": 0, "slowest_c": [[1.5, "Tanh (b256)"],
                                                                                         [6.0, "Tanh (b1)"]]})
    block_c = readme.render(ops, corpus)
    assert ("ORT C / C++ loop: ONNX Runtime's `RunWithBinding` and the generated `run`, each called from a C++ loop; "
            "above 1 is faster than ONNX Runtime): geometric mean **3.00**, 0 of 2 below 1.0. The slowest 15: "
            "Tanh (b256) 1.50, Tanh (b1) 6.00.") in block_c
    assert "geometric mean **2.00**, 1 of 3 below 1.0. The slowest 15: Tanh (b1) 0.50" in block_c
    text = f"head\n{readme.BEGIN}\nold\n{readme.END}\ntail\n"
    assert readme.replace_block(text, block) == f"head\n{block}\ntail\n"
    with pytest.raises(SystemExit, match="markers"):
        readme.replace_block("no markers", block)
    assert readme.BEGIN in readme.README.read_text() and readme.END in readme.README.read_text()


def test_ort_c_api_loop_matches_onnxruntime_python() -> None:
    # the operator table's "ORT C" column drives ONNX Runtime through its C API by the OrtApi
    # table's fixed positions: a wrong position would crash or give other outputs than ORT's
    # Python API on the same model and inputs, and a failing Run must raise with ORT's message
    import onnxruntime as ort

    from benchmarks import ort_capi

    if ort_capi.library_path() is None:
        pytest.skip("this onnxruntime wheel ships no libonnxruntime.so")
    m = make_model([helper.make_node("Add", ["x", "y"], ["s"]), helper.make_node("Tanh", ["s"], ["t"]),
                    helper.make_node("ReduceSum", ["t"], ["r"], keepdims=1)],
                   [value_info("x", F, (3, 5)), value_info("y", F, (3, 5))],
                   [value_info("t", F, None), value_info("r", F, None)], opset=17)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((3, 5)).astype(F), rng.standard_normal((3, 5)).astype(F)
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x, "y": y})
    loop = ort_capi.OrtCLoop()
    outs = {"t": np.full((3, 5), np.nan, F), "r": np.full((1, 1), np.nan, F)}
    s = loop.session(m.SerializeToString(), {"x": x, "y": y}, outs)
    for binding in (True, False):
        for o in outs.values():
            o.fill(np.nan)
        assert s.run(3, binding=binding) > 0
        np.testing.assert_array_equal(outs["t"], ref[0])
        np.testing.assert_array_equal(outs["r"], ref[1])
    timer = s.prepare(0.001)
    assert timer() > 0
    s.close()
    bad = loop.session(m.SerializeToString(), {"x": x, "y": np.zeros((3, 4), F)}, outs)
    with pytest.raises(ort_capi.OrtCError, match=r"(?i)dimension|shape"):
        bad.run(1)
    bad.close()
    with pytest.raises(ort_capi.OrtCError):
        loop.session(b"not an onnx model", {"x": x}, outs)
