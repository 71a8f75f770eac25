"""lipcert's own ONNX converter (certify/onnx/) against onnxruntime, and its refusals."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

from certify.checkpoints import load_model
from certify.errors import BadInputError
from certify.flags import check_softmax_ending
from certify.onnx import load_onnx
from certify.onnx.convert import OnnxModule, PerExample, export_program


def export(model: nn.Module, shape: tuple[int, ...], path: Path, dynamic: bool = True, fold: bool = True) -> Path:
    model.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros((1,) + shape),), buf, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}} if dynamic else None,
                          do_constant_folding=fold)
    path.write_bytes(buf.getvalue())
    return path


def randomise_bn(model: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=gen))
    return model


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.stem = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.head = nn.Linear(2 * 14 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = h + torch.tanh(self.conv(h)) * 0.5
        return self.head(h.view(h.size(0), -1))


class Flatten784(nn.Module):
    """Takes (N, 784, 1): the layout many ONNX benchmark nets declare."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.squeeze(2) - 0.5)


class CatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(12, 5), nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], 3, 4).transpose(1, 2).reshape(x.shape[0], 12)
        y = torch.cat([torch.sigmoid(self.a(x)), nn.functional.leaky_relu(self.b(x), 0.2)], dim=1)
        return y.unsqueeze(1).flatten(1) / 2.0


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


def cnn() -> nn.Module:
    return randomise_bn(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 4, 3), nn.AvgPool2d(2, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)))


def cnn_flat_view() -> nn.Module:
    return randomise_bn(nn.Sequential(nn.Conv2d(1, 3, 5, stride=2), nn.BatchNorm2d(3), nn.ReLU(),
                                      nn.Flatten(), nn.Linear(3 * 12 * 12, 10)))


MODELS = {
    "mlp": (mlp, (1, 28, 28)),
    "cnn-bn-pool": (cnn, (1, 28, 28)),
    "cnn-flatten": (cnn_flat_view, (1, 28, 28)),
    "residual-view": (Residual, (1, 28, 28)),
    "flat-784x1": (Flatten784, (784, 1)),
    "concat-transpose": (CatNet, (12,)),
}


def ort_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0].reshape(1, -1) for i in range(len(x))])


@pytest.mark.parametrize("dynamic,fold", [(True, True), (False, False)], ids=["dynamic-folded", "batch1-unfolded"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_converted_model_matches_onnxruntime(tmp_path: Path, name: str, dynamic: bool, fold: bool) -> None:
    build, shape = MODELS[name]
    torch.manual_seed(0)
    path = export(build(), shape, tmp_path / "m.onnx", dynamic, fold)
    module = load_onnx(path)
    assert isinstance(module, OnnxModule)  # rows stay apart: one batched module
    x = np.random.default_rng(0).random((5,) + shape, dtype=np.float32)
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ort_outputs(path, x), atol=1e-5, rtol=1e-5)
    ep = export_program(module, shape)  # a torch.export program: what the analyser reads
    with torch.no_grad():
        np.testing.assert_allclose(ep.module()(torch.from_numpy(x)).numpy(), got, atol=1e-6)


def test_mnist_layout_maps_onto_a_flat_input(tmp_path: Path) -> None:
    path = export(Flatten784(), (784, 1), tmp_path / "flat.onnx")
    x = np.random.default_rng(1).random((3, 1, 28, 28), dtype=np.float32)
    loaded = load_model(path)
    assert loaded.format == "onnx" and loaded.metadata.input_shape is None
    with torch.no_grad():
        got = loaded(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ort_outputs(path, x.reshape(3, 784, 1)), atol=1e-5)
    explicit = load_model(path, input_shape=(28, 28))
    assert explicit.metadata.input_shape == (28, 28)
    with pytest.raises(BadInputError, match=r"input \(784, 1\) has 784") as err:
        load_model(path, input_shape=(3, 28, 28))
    assert err.value.param == "input_shape"
    with pytest.raises(BadInputError, match="do not fit"):
        loaded(torch.zeros(2, 3, 28, 28))


def test_pairwise_analysis_runs_on_a_converted_model(tmp_path: Path) -> None:
    from certify.lipschitz.analysis import analyse

    path = export(mlp(), (1, 28, 28), tmp_path / "mlp.onnx")
    report = analyse(load_model(path), norm="l2", input_shape=(1, 28, 28))
    assert report.verified, report.reason


# --------------------------------------------------------------------------- hand-written graphs


def make_model(nodes: list, inits: list, in_shape: list, out_shape: list, opset: int = 17, **kw) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(kw.get("domain", ""), opset)])


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def weight(name: str, *shape: int, seed: int = 0) -> TensorProto:
    arr = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return numpy_helper.from_array(arr, name)


def test_hand_written_ops_match_onnxruntime(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 0, 2, 1], strides=[1, 2]),
        helper.make_node("LeakyRelu", ["c"], ["r"], alpha=0.1),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["p"], ["g"]),
        helper.make_node("Squeeze", ["g", "axes"], ["s"]),
        helper.make_node("Gemm", ["s", "fw", "fb"], ["z"], alpha=0.5, beta=2.0, transB=1),
        helper.make_node("Sub", ["z", "fb"], ["y"]),
    ]
    inits = [weight("w", 3, 2, 3, 3), weight("fw", 4, 3, seed=1), weight("fb", 4, seed=2),
             numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")]
    path = save(make_model(nodes, inits, ["N", 2, 9, 8], ["N", 4]), tmp_path / "hand.onnx")
    x = np.random.default_rng(3).random((4, 2, 9, 8), dtype=np.float32)
    with torch.no_grad():
        got = load_onnx(path)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ort_outputs(path, x), atol=1e-5, rtol=1e-5)


def test_a_graph_that_mixes_the_batch_runs_per_example(tmp_path: Path) -> None:
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
             helper.make_node("Reshape", ["t", "shape"], ["y"])]
    inits = [numpy_helper.from_array(np.array([1, 6], dtype=np.int64), "shape")]
    path = save(make_model(nodes, inits, [1, 6], [1, 6]), tmp_path / "mix.onnx")
    module = load_onnx(path)
    assert isinstance(module, PerExample)
    x = np.random.default_rng(0).random((3, 6), dtype=np.float32)
    np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), ort_outputs(path, x), atol=1e-6)


def test_softmax_output_is_converted_and_marked(tmp_path: Path) -> None:
    path = export(nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1)), (4,), tmp_path / "soft.onnx")
    module = load_onnx(path)
    assert [f.id for f in check_softmax_ending(module)] == ["model-ends-in-softmax"]
    assert check_softmax_ending(load_onnx(export(mlp(), (1, 28, 28), tmp_path / "mlp.onnx"))) == []
    x = np.random.default_rng(0).random((2, 4), dtype=np.float32)
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), ort_outputs(path, x), atol=1e-6)


# --------------------------------------------------------------------------- refusals


def test_unsupported_op_is_refused_naming_op_and_node(tmp_path: Path) -> None:
    nodes = [helper.make_node("Erf", ["x"], ["y"], name="the_erf")]
    path = save(make_model(nodes, [], ["N", 3], ["N", 3]), tmp_path / "erf.onnx")
    with pytest.raises(BadInputError, match=r"unsupported op 'Erf' at node 'the_erf'"):
        load_model(path)


def test_unknown_attribute_values_are_refused(tmp_path: Path) -> None:
    nodes = [helper.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[2, 2], auto_pad="SAME_UPPER")]
    path = save(make_model(nodes, [], ["N", 1, 4, 4], ["N", 1, 4, 4]), tmp_path / "same.onnx")
    with pytest.raises(BadInputError, match=r"'mp' \(MaxPool\): auto_pad 'SAME_UPPER'"):
        load_onnx(path)
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r", bogus=3)]
    path = save(make_model(nodes, [], ["N", 3], ["N", 3]), tmp_path / "bogus.onnx")
    with pytest.raises(BadInputError, match=r"attribute 'bogus' is not supported"):
        load_onnx(path)


def test_external_data_is_refused_without_reading_the_path(tmp_path: Path) -> None:
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[3, 3], data_location=TensorProto.EXTERNAL)
    w.external_data.add(key="location", value="/etc/passwd")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    path = save(make_model(nodes, [w], ["N", 3], ["N", 3]), tmp_path / "ext.onnx")
    with pytest.raises(BadInputError, match="external file"):
        load_model(path)


def test_huge_declared_dims_allocate_nothing(tmp_path: Path) -> None:
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20], raw_data=b"\0" * 16)
    path = save(make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [w], ["N", 3], ["N", 3]),
                tmp_path / "huge.onnx")
    with pytest.raises(BadInputError, match="over 268435456 elements"):
        load_model(path)
    lying = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[3, 3], raw_data=b"\0" * 8)
    path = save(make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [lying], ["N", 3], ["N", 3]),
                tmp_path / "lying.onnx")
    with pytest.raises(BadInputError, match="declares 9 elements but holds 8 bytes"):
        load_model(path)
    path = save(make_model([helper.make_node("Relu", ["x"], ["y"])], [], ["N", 1 << 40], ["N", 3]),
                tmp_path / "wide.onnx")
    with pytest.raises(BadInputError, match="input dimension"):
        load_model(path)
    path = save(make_model([helper.make_node("Relu", ["x"], ["y"])], [], ["N", 1 << 20, 1 << 20], ["N", 3]),
                tmp_path / "many.onnx")
    with pytest.raises(BadInputError, match="elements per example"):
        load_model(path)


def test_unknown_operator_domain_is_refused(tmp_path: Path) -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [], ["N", 3], ["N", 3], domain="com.evil")
    with pytest.raises(BadInputError, match="domain 'com.evil'"):
        load_model(save(model, tmp_path / "dom.onnx"))
    node = helper.make_node("Relu", ["x"], ["y"], domain="com.microsoft")
    with pytest.raises(BadInputError, match="operator domain 'com.microsoft'"):
        load_model(save(make_model([node], [], ["N", 3], ["N", 3]), tmp_path / "node_dom.onnx"))


def test_damaged_onnx_is_one_error_line(tmp_path: Path) -> None:
    path = export(mlp(), (1, 28, 28), tmp_path / "ok.onnx")
    data = path.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match="cannot read ONNX model|not a valid ModelProto|declares"):
        load_model(tmp_path / "cut.onnx")


def test_without_onnx_the_error_says_pip_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    path = export(mlp(), (1, 28, 28), tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(BadInputError, match="pip install onnx"):
        load_model(path)


def test_opsets_outside_the_supported_range_are_refused(tmp_path: Path) -> None:
    for opset in (6, 29):
        model = make_model([helper.make_node("Relu", ["x"], ["y"])], [], ["N", 3], ["N", 3], opset=opset)
        with pytest.raises(BadInputError, match=f"uses opset {opset}; lipcert supports opsets 7 to 28"):
            load_model(save(model, tmp_path / f"op{opset}.onnx"))


def test_more_hand_written_ops_match_onnxruntime(tmp_path: Path) -> None:
    """ConvTranspose, AveragePool counting pads, opset-11 Softmax (coerced to 2-D) and Unsqueeze
    (axes attribute), Flatten at axis 2, Dropout, Identity, Div, MatMul, Concat, Transpose, Constant."""
    const = helper.make_node("Constant", [], ["k"], value_floats=[0.5, 2.0, -1.0])
    nodes = [
        helper.make_node("ConvTranspose", ["x", "wt", "bt"], ["ct"], strides=[2, 2], pads=[1, 1, 1, 1],
                         output_padding=[1, 1]),
        helper.make_node("AveragePool", ["ct"], ["ap"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         count_include_pad=1, strides=[2, 2]),
        helper.make_node("Dropout", ["ap"], ["dr"], ratio=0.3),
        helper.make_node("Identity", ["dr"], ["id"]),
        helper.make_node("Flatten", ["id"], ["fl"], axis=2),          # (N*3, 16)
        helper.make_node("MatMul", ["fl", "m"], ["mm"]),              # (N*3, 3)
        helper.make_node("Div", ["mm", "k"], ["dv"]),
        helper.make_node("Reshape", ["dv", "shape"], ["rs"]),          # (N, 3, 3)
        helper.make_node("Transpose", ["rs"], ["tr"], perm=[0, 2, 1]),
        helper.make_node("Softmax", ["tr"], ["sm"], axis=1),           # opset 11: over the last 2 dims together
        helper.make_node("Unsqueeze", ["sm"], ["us"], axes=[1]),
        helper.make_node("Squeeze", ["us"], ["sq"], axes=[1]),
        helper.make_node("Flatten", ["sq"], ["f2"]),
        helper.make_node("Concat", ["f2", "f2"], ["y"], axis=1),
    ]
    inits = [weight("wt", 2, 3, 3, 3), weight("bt", 3, seed=1), weight("m", 16, 3, seed=2),
             numpy_helper.from_array(np.array([-1, 3, 3], dtype=np.int64), "shape")]
    model = make_model([const] + nodes, inits, ["N", 2, 4, 4], ["N", 18], opset=11)
    path = save(model, tmp_path / "more.onnx")
    x = np.random.default_rng(5).random((3, 2, 4, 4), dtype=np.float32)
    module = load_onnx(path)
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ort_outputs(path, x), atol=1e-5, rtol=1e-5)
