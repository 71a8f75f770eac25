"""Checkpoint loading: formats by content, metadata, safety."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from certify import Architecture, LipschitzClaim, ModelMetadata, load_model, save_model
from certify.checkpoints import detect_format, load_architecture, resolve_class
from certify.errors import BadInputError, UnsafeCheckpointError

from .conftest import Affine, unit_row_model

X = torch.randn(5, 1, 2, 2)
META = ModelMetadata(input_shape=(1, 2, 2), dataset="demo", num_classes=3, class_names=("a", "b", "c"),
                     lipschitz=LipschitzClaim("l2", "per-logit", 1.0))
ARCH = Architecture(cls="tests.test_checkpoint:TinyNet", kwargs={"hidden": 5})


class TinyNet(nn.Module):
    def __init__(self, hidden: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Payload:
    """Unpickling this object would create a marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["torch.export", "torchscript", "state_dict"])
def test_round_trip_keeps_outputs_and_metadata(tmp_path, fmt):
    torch.manual_seed(0)
    net = TinyNet(hidden=5).eval()
    # misleading file name: detection is by content
    path = save_model(net, tmp_path / "model.bin", META, format=fmt, example_input=X[:2], architecture=ARCH)
    loaded = load_model(path, trusted_modules=("tests.test_checkpoint",))
    assert loaded.format == fmt
    assert loaded.metadata == META
    assert len(loaded.sha256) == 64
    torch.testing.assert_close(loaded.module(X), net(X), rtol=0, atol=0)
    assert not any(p.requires_grad for p in loaded.module.parameters())


def test_plain_state_dict_needs_architecture(tmp_path):
    net = TinyNet(hidden=5)
    path = tmp_path / "sd.pt"
    torch.save(net.state_dict(), path)
    with pytest.raises(BadInputError, match="without an architecture"):
        load_model(path)
    loaded = load_model(path, arch=load_architecture("tests.test_checkpoint:TinyNet", {"hidden": 5}))
    torch.testing.assert_close(loaded.module(X), net.eval()(X))


def test_state_dict_shape_mismatch_is_one_line(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(TinyNet(hidden=5).state_dict(), path)
    with pytest.raises(BadInputError, match="does not match the architecture") as err:
        load_model(path, arch=load_architecture("tests.test_checkpoint:TinyNet", {"hidden": 7}))
    assert "\n" not in str(err.value)


def test_nan_weights_are_refused(tmp_path):
    net = TinyNet()
    sd = net.state_dict()
    sd["net.1.weight"][0, 0] = float("nan")
    path = tmp_path / "sd.pt"
    torch.save(sd, path)
    with pytest.raises(BadInputError, match="NaN or Inf"):
        load_model(path, arch=load_architecture("tests.test_checkpoint:TinyNet"))


def test_yaml_model_spec(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "layers:\n  - Flatten\n  - Linear: [4, 3]\nmetadata:\n  input_shape: [1, 2, 2]\n  dataset: demo\n"
    )
    seq = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    path = tmp_path / "w.pt"
    torch.save(seq.state_dict(), path)
    loaded = load_model(path, arch=load_architecture(str(spec)))
    assert loaded.metadata.input_shape == (1, 2, 2)
    torch.testing.assert_close(loaded.module(X), seq(X))


def test_yaml_model_spec_unknown_key(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("layer: []\n")
    with pytest.raises(BadInputError, match="unknown keys \\['layer'\\]"):
        load_architecture(str(spec))


def test_safetensors_with_metadata(tmp_path):
    from safetensors.torch import save_file

    net = TinyNet(hidden=5).eval()
    path = tmp_path / "m.safetensors"
    save_file(net.state_dict(), str(path), metadata={"lipcert.json": json.dumps(META.to_dict()),
                                                     "lipcert_architecture": json.dumps(ARCH.to_dict())})
    loaded = load_model(path, trusted_modules=("tests.test_checkpoint",))
    assert loaded.format == "safetensors"
    assert loaded.metadata.lipschitz == META.lipschitz
    torch.testing.assert_close(loaded.module(X), net(X))


def test_pickle_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Payload(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match="trust_checkpoint") as err:
        load_model(path)
    assert err.value.param == "trust_checkpoint"  # the CLI names its flag: --trust-checkpoint
    assert not marker.exists()


def test_full_module_pickle_needs_trust(tmp_path):
    net = TinyNet().eval()
    path = tmp_path / "full.pt"
    torch.save(net, path)
    with pytest.raises(UnsafeCheckpointError):
        load_model(path)
    loaded = load_model(path, trust_checkpoint=True)
    assert loaded.format == "pickle"
    torch.testing.assert_close(loaded.module(X), net(X))


def test_normalisation_is_prepended_when_not_in_model(tmp_path):
    net = Affine(torch.eye(4)[:3]).eval()
    meta = ModelMetadata(input_shape=(1, 2, 2), mean=(0.5,), std=(0.25,), normalization_in_model=False)
    path = save_model(net, tmp_path / "m.pt2", meta, example_input=X[:2])
    loaded = load_model(path)
    x = torch.full((1, 1, 2, 2), 0.75)
    # (0.75 - 0.5) / 0.25 = 1 on each pixel → logits equal the first three pixels
    torch.testing.assert_close(loaded.module(x), torch.ones(1, 3))


@pytest.mark.parametrize(
    "content, match",
    [(b"", "is empty"), (b"hello world, not a model", "unknown format"), (b"PK\x03\x04junk", "unknown format|damaged")],
)
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(BadInputError, match=match):
        load_model(path)


def test_truncated_checkpoint(tmp_path):
    path = save_model(unit_row_model(), tmp_path / "m.pt2", META, example_input=X[:2])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError):
        load_model(path)


def test_missing_and_directory(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(BadInputError, match="is a directory"):
        load_model(tmp_path)


def test_detect_format_ignores_extension(tmp_path):
    path = save_model(unit_row_model(), tmp_path / "model.onnx", META, format="torchscript", example_input=X[:2])
    assert detect_format(path) == "torchscript"


def test_bad_metadata_is_reported(tmp_path):
    with pytest.raises(BadInputError, match="unknown keys"):
        ModelMetadata.from_dict({"inputshape": [1, 2, 2]})
    with pytest.raises(BadInputError, match="norm"):
        LipschitzClaim("l3", "vector")


def test_lipschitz_claim_norm_is_a_norm_and_saves_as_its_string():
    from certify.threat import Norm

    claim = LipschitzClaim("L2", "vector")
    assert claim.norm is Norm.L2 and claim == LipschitzClaim("l2", "vector")
    saved = ModelMetadata(lipschitz=claim).to_dict()["lipschitz"]
    assert saved == {"norm": "l2", "kind": "vector", "constant": 1.0} and type(saved["norm"]) is str
    assert ModelMetadata.from_dict(json.loads(json.dumps(ModelMetadata(lipschitz=claim).to_dict()))).lipschitz == claim


def test_library_errors_name_values_not_flags(tmp_path):
    """The CLI swaps ``param`` for its flag; the library speaks of its own parameters."""
    path = tmp_path / "sd.pt"
    torch.save(TinyNet().state_dict(), path)
    with pytest.raises(BadInputError, match="without an architecture; pass arch ") as err:
        load_model(path)
    assert err.value.param == "arch" and "--" not in str(err.value)
    with pytest.raises(BadInputError, match="example_input") as err:
        save_model(TinyNet(), tmp_path / "m.pt2", META)
    assert err.value.param == "example_input"
    with pytest.raises(UnsafeCheckpointError, match="pass trust_modules os, or give arch os:system") as err:
        resolve_class("os:system", trusted_modules=())
    assert err.value.param == ("trust_modules", "arch")  # the CLI shows --trust-module and --arch


def test_old_module_paths_are_aliases_of_the_new_homes():
    import certify
    import certify.checkpoint as old
    import certify.checkpoints as new
    import certify.safe_export as old_pt2
    from certify.checkpoints import safe_export

    for name in ("load_model", "save_model", "LoadedModel", "ModelMetadata", "LipschitzClaim", "Architecture",
                 "Normalize", "resolve_class", "detect_format", "load_architecture", "BUILTIN_ARCH_MODULES"):
        assert getattr(old, name) is getattr(new, name)
    assert old.check_finite_weights is new.readers.check_finite_weights
    assert old_pt2.load_archive is safe_export.load_archive and old_pt2.validate_archive is safe_export.validate_archive
    assert certify.load_model is new.load_model
