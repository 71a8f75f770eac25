"""Untrusted files never run code (docs/security.md).

Every test builds a hostile file whose payload would ``touch`` a marker file,
feeds it to lipcert without ``--trust-checkpoint``, and asserts exit 2 with one
``Error:`` line and that the marker never appears.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from certify import LipschitzClaim, ModelMetadata, load_model, save_model
from certify.cli import main
from certify.errors import BadInputError, UnsafeCheckpointError

from .conftest import Affine, Tiny

SHAPE = (1, 2, 2)


class Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("security")
    meta = ModelMetadata(input_shape=SHAPE, lipschitz=LipschitzClaim("l2", "per-logit", 1.0))
    good = save_model(Affine(torch.eye(4)[:3]), d / "good.pt2", meta, example_input=torch.zeros(2, *SHAPE))
    import numpy as np

    x = np.random.default_rng(0).random((8, *SHAPE), dtype=np.float32)
    y = x.reshape(8, -1)[:, :3].argmax(1)
    y[:2] = (y[:2] + 1) % 3  # two misclassified points
    np.savez(d / "data.npz", x=x, y=y)
    return {"dir": d, "good": good, "data": d / "data.npz"}


@pytest.fixture()
def marker(tmp_path) -> Path:
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), "a payload in an untrusted file ran"


def rewrite_pt2(src: Path, dst: Path, edit) -> Path:
    """Copy a pt2 archive, letting ``edit(relative_name, bytes)`` change, drop (None) or add members."""
    with zipfile.ZipFile(src) as zin:
        root = zin.namelist()[0].split("/", 1)[0]
        members = {n.split("/", 1)[1]: zin.read(n) for n in zin.namelist()}
    members = edit(members)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for name, data in members.items():
            zout.writestr(f"{root}/{name}", data)
    return dst


def pickled(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def cli_refuses(path: Path, data: Path, *extra: str, message: str = "") -> str:
    res = CliRunner().invoke(main, ["certify", str(path), "--data", str(data), "--norm", "l2", "--eps", "0.1",
                                    "-q", *extra])
    assert res.exit_code == 2, (res.stdout, res.stderr, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert "internal error" not in lines[0] and "Traceback" not in res.output
    assert message in lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- torch.export archives


def _sample_inputs(m, marker):
    m["data/sample_inputs/model.pt"] = pickled(((Payload(str(marker)),), {}))
    return m


def _pickled_weight(m, marker):
    cfg = json.loads(m["data/weights/model_weights_config.json"])
    first = next(iter(cfg["config"].values()))
    first["use_pickle"] = True
    m["data/weights/model_weights_config.json"] = json.dumps(cfg).encode()
    m[f"data/weights/{first['path_name']}"] = pickled(Payload(str(marker)))
    return m


def _opaque_constant(m, marker):
    import pickle

    m["data/constants/model_constants_config.json"] = json.dumps(
        {"config": {"c": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True}}}).encode()
    m["data/constants/opaque_obj_0"] = pickle.dumps(Payload(str(marker)))
    return m


def _aoti(m, marker):
    m["data/aotinductor/model/model.so"] = b"\x7fELF"
    return m


def _legacy(m, marker):
    return {"version": b"8.20", "serialized_exported_program.json": m["models/model.json"],
            "serialized_state_dict.pt": pickled(Payload(str(marker))), "serialized_constants.pt": b"",
            "serialized_example_inputs.pt": b""}


def _edit_program(fn):
    def edit(m, marker):
        program = json.loads(m["models/model.json"])
        fn(program, str(marker))
        m["models/model.json"] = json.dumps(program).encode()
        return m
    return edit


def _replace_symbols(program, expr):
    import re

    text = re.sub(r"Symbol\('s\d+', positive=True, integer=True\)", lambda _m: expr, json.dumps(program))
    assert expr in text
    program.clear()
    program.update(json.loads(text))


def _sympy_expr(program, marker):
    _replace_symbols(program, f"__import__('os').system('touch {marker}')")


def _sympy_no_dunder(program, marker):
    code = f"import os; os.system('touch {marker}')".encode()
    _replace_symbols(program, f"exec(bytes([{','.join(str(b) for b in code)}]))")


def _guards(program, marker):
    program["guards_code"] = [f"__import__('os').system('touch {marker}')"]


def _foreign_op(program, marker):
    program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.ops.mylib.run_shell.default"


PT2_ATTACKS = {
    "sample-inputs-pickle": _sample_inputs,
    "pickled-weight": _pickled_weight,
    "opaque-constant": _opaque_constant,
    "aotinductor-library": _aoti,
    "legacy-archive": _legacy,
    "sympy-expression": _edit_program(_sympy_expr),
    "sympy-expression-no-dunder": _edit_program(_sympy_no_dunder),
    "guards-code": _edit_program(_guards),
    "non-aten-op": _edit_program(_foreign_op),
}


@pytest.mark.parametrize("name", sorted(PT2_ATTACKS))
def test_hostile_pt2_is_refused(name, base, marker, tmp_path):
    path = rewrite_pt2(base["good"], tmp_path / "evil.pt2", lambda m: PT2_ATTACKS[name](m, marker))
    with pytest.raises(BadInputError):
        load_model(path)
    cli_refuses(path, base["data"])


def test_sample_inputs_payload_refused_with_trust_hint(base, marker, tmp_path):
    path = rewrite_pt2(base["good"], tmp_path / "evil.pt2", lambda m: _sample_inputs(m, marker))
    with pytest.raises(UnsafeCheckpointError, match="trust_checkpoint") as err:
        load_model(path)
    assert err.value.param == "trust_checkpoint"  # the CLI names its flag: --trust-checkpoint


def test_duplicate_member_names_are_refused(base, tmp_path):
    import warnings

    path = tmp_path / "dup.pt2"
    with zipfile.ZipFile(base["good"]) as zin, zipfile.ZipFile(path, "w") as zout, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("models/model.json"):
                zout.writestr(info.filename, data.replace(b"torch.ops.aten", b"torch.ops.evil"))
            zout.writestr(info.filename, data)
    assert "same name" in cli_refuses(path, base["data"])


def test_crc_damaged_pt2_is_refused(base, tmp_path):
    raw = bytearray(base["good"].read_bytes())
    with zipfile.ZipFile(base["good"]) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("weight_0"))
    name_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    raw[info.header_offset + 30 + name_len + extra_len] ^= 0xFF
    path = tmp_path / "crc.pt2"
    path.write_bytes(bytes(raw))
    assert "CRC" in cli_refuses(path, base["data"])


def test_plain_pt2_still_loads(base):
    loaded = load_model(base["good"])
    assert loaded.format == "torch.export"
    out = loaded(torch.zeros(3, *SHAPE))
    assert out.shape == (3, 3)


# ----------------------------------------------------------------------------- architectures named by files


def _state_dict_file(path: Path, architecture) -> Path:
    torch.save({"lipcert_format": 1, "state_dict": Tiny().state_dict(), "metadata": {"input_shape": list(SHAPE)},
                "architecture": architecture}, path)
    return path


def _safetensors_file(path: Path, architecture: str) -> Path:
    from safetensors.torch import save_file

    save_file(Tiny().state_dict(), str(path), metadata={"lipcert_architecture": architecture})
    return path


@pytest.mark.parametrize("spec", ["os:system", "subprocess:Popen", "builtins:eval", "tests.test_security:Tiny"])
def test_state_dict_architecture_outside_lipcert_is_not_imported(spec, base, marker, tmp_path):
    path = _state_dict_file(tmp_path / "sd.pt", {"class": spec, "kwargs": {"command": f"touch {marker}"}})
    message = cli_refuses(path, base["data"], message="--trust-module")
    assert spec in message


def test_safetensors_architecture_outside_lipcert_is_not_imported(base, marker, tmp_path):
    arch = json.dumps({"class": "os:system", "kwargs": {"command": f"touch {marker}"}})
    cli_refuses(_safetensors_file(tmp_path / "m.safetensors", arch), base["data"], message="--trust-module")


def test_safetensors_architecture_bad_json(base, tmp_path):
    cli_refuses(_safetensors_file(tmp_path / "m.safetensors", "{not json"), base["data"], message="not valid JSON")


@pytest.mark.parametrize("layers", [["system"], [{"init": {}}], ["__class__"], [{"utils": []}]])
def test_layer_spec_names_only_module_classes(layers, base, marker, tmp_path):
    path = _state_dict_file(tmp_path / "sd.pt", {"layers": layers})
    cli_refuses(path, base["data"], message="unknown layer")


def test_user_trusted_module_is_allowed(base, tmp_path):
    path = _state_dict_file(tmp_path / "sd.pt", {"class": "tests.test_security:Tiny", "kwargs": {}})
    res = CliRunner().invoke(main, ["certify", str(path), "--data", str(base["data"]), "--norm", "l2",
                                    "--eps", "0.1", "-q", "--trust-module", "tests.test_security",
                                    "--certificate", "l2-multi", "--assume-lipschitz"])
    assert res.exit_code == 0, (res.stdout, res.stderr)


def test_arch_naming_a_function_is_refused(base, marker, tmp_path):
    path = _state_dict_file(tmp_path / "sd.pt", None)
    cli_refuses(path, base["data"], "--arch", "os:system", "--arch-kwargs", json.dumps({"command": f"touch {marker}"}),
                message="not an nn.Module subclass")


def test_huge_architecture_allocates_nothing(base, tmp_path):
    # 10^14 floats would be 400 TB: it must be refused from the meta-device shapes, not allocated
    path = _state_dict_file(tmp_path / "sd.pt", {"layers": [{"Linear": [10 ** 7, 10 ** 7]}]})
    cli_refuses(path, base["data"], message="does not match the architecture")


def test_pickle_payload_never_runs(base, marker, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Payload(str(marker))}, path)
    cli_refuses(path, base["data"], message="--trust-checkpoint")


# ----------------------------------------------------------------------------- resume is verified, not trusted


def _run(*argv: str):
    return CliRunner().invoke(main, [*argv, "-q"])


@pytest.fixture(scope="module")
def partials(base) -> dict[str, Path]:
    d, good, data = base["dir"], str(base["good"]), str(base["data"])
    out = {}
    res = _run("certify", good, "--data", data, "--norm", "l2", "--eps", "0.1", "--certificate", "l2-multi",
               "--assume-lipschitz", "--json", str(d / "cert_assumed.json"))
    assert res.exit_code == 0, res.stderr
    res = _run("certify", good, "--data", data, "--norm", "l2", "--eps", "0.1", "--json", str(d / "cert.json"))
    assert res.exit_code == 0, res.stderr
    res = _run("attack", good, "--data", data, "--norm", "l2", "--eps", "0.5", "--attacks", "pgd", "--steps", "3",
               "--no-certify-first", "--json", str(d / "attack.json"))
    assert res.exit_code == 0, res.stderr
    out.update(cert_assumed=d / "cert_assumed.json", cert=d / "cert.json", attack=d / "attack.json")
    return out


def _forge(src: Path, dst: Path, edit) -> Path:
    data = json.loads(src.read_text())
    edit(data)
    dst.write_text(json.dumps(data))
    return dst


CERTIFY = ("--norm", "l2", "--eps", "0.1")


def _resume_refused(argv, message):
    res = _run(*argv)
    assert res.exit_code == 2, (res.stdout, res.stderr, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --resume"), res.stderr
    assert message in lines[0]


def test_resume_valid_partial_is_accepted(base, partials, tmp_path):
    out = tmp_path / "resumed.json"
    res = _run("certify", str(base["good"]), "--data", str(base["data"]), *CERTIFY, "--resume",
               str(partials["cert"]), "--json", str(out))
    assert res.exit_code == 0, res.stderr
    assert json.loads(out.read_text())["per_example"] == json.loads(partials["cert"].read_text())["per_example"]


def test_resume_under_another_certificate_is_refused(base, partials):
    _resume_refused(("certify", str(base["good"]), "--data", str(base["data"]), *CERTIFY, "--resume",
                     str(partials["cert_assumed"])), "certificate 'l2-multi'")


def test_resume_at_other_eps_or_seed_is_refused(base, partials):
    common = ("certify", str(base["good"]), "--data", str(base["data"]), "--norm", "l2")
    _resume_refused((*common, "--eps", "0.2", "--resume", str(partials["cert"])), "eps [0.1]")
    _resume_refused((*common, "--eps", "0.1", "--seed", "7", "--resume", str(partials["cert"])), "seed 0")


@pytest.mark.parametrize("forgery, message", [
    (lambda d: d["per_example"]["radius"].pop(), "different lengths"),
    (lambda d: d["per_example"]["index"].reverse(), "'index' must be 0, 1, 2"),
    (lambda d: d["per_example"]["radius"].__setitem__(0, 99.0), "recomputing it gives"),
    (lambda d: d["per_example"]["prediction"].__setitem__(1, (d["per_example"]["prediction"][1] + 1) % 3),
     "prediction"),
    (lambda d: d["per_example"].__setitem__("gap", "x" * 10_000), "must be a list"),
    (lambda d: d["settings"].__setitem__("data_total", 3), "data total 3"),
    (lambda d: d.pop("settings"), "no 'settings' block"),
])
def test_forged_certify_partial_is_refused(forgery, message, base, partials, tmp_path):
    forged = _forge(partials["cert"], tmp_path / "forged.json", forgery)
    _resume_refused(("certify", str(base["good"]), "--data", str(base["data"]), *CERTIFY, "--resume", str(forged)),
                    message)


ATTACK = ("--norm", "l2", "--eps", "0.5", "--attacks", "pgd", "--steps", "3", "--no-certify-first")


def test_attack_resume_in_another_mode_is_refused(base, partials):
    _resume_refused(("attack", str(base["good"]), "--data", str(base["data"]), *ATTACK, "--independent",
                     "--resume", str(partials["attack"])), "mode 'cascade'")


@pytest.mark.parametrize("forgery, message", [
    (lambda d: d["per_example"]["robust"].__setitem__(0, [True]), "misclassifies"),
    (lambda d: d["per_example"]["min_adv_distance"].__setitem__(0, -1.0), "negative or NaN"),
    (lambda d: d["per_example"]["min_adv_attack"].__setitem__(0, "os.system"), "names an attack"),
    (lambda d: d["per_example"]["index"].reverse(), "'index' must be"),
    (lambda d: d["results"][0].__setitem__("successes", 10 ** 6), "could have written"),
])
def test_forged_attack_partial_is_refused(forgery, message, base, partials, tmp_path):
    forged = _forge(partials["attack"], tmp_path / "forged.json", forgery)
    _resume_refused(("attack", str(base["good"]), "--data", str(base["data"]), *ATTACK, "--resume", str(forged)),
                    message)


@pytest.mark.parametrize("module", ["certify.models", "certify.zoo.models"])
def test_lipcert_family_builders_may_be_named_by_a_file(module, base, tmp_path):
    from certify.zoo.models import l2nnn_mlp

    net = l2nnn_mlp(hidden=8, depth=1)
    path = tmp_path / "family.pt"
    torch.save({"lipcert_format": 1, "state_dict": net.state_dict(), "metadata": {"input_shape": [1, 28, 28]},
                "architecture": {"class": f"{module}:l2nnn_mlp", "kwargs": {"hidden": 8, "depth": 1}}}, path)
    loaded = load_model(path)
    assert loaded.format == "state_dict"


def test_old_and_zoo_names_resolve_to_the_same_classes():
    """Files written before the zoo moved name ``certify.models``/``certify.layers``; both names work."""
    from certify.checkpoints import resolve_class

    for old, new in [("certify.layers:L2Linear", "certify.zoo.layers:L2Linear"),
                     ("certify.models:l2nnn_mlp", "certify.zoo.models:l2nnn_mlp")]:
        assert resolve_class(old, trusted_modules=()) is resolve_class(new, trusted_modules=())


@pytest.mark.parametrize("spec", ["certify.zoo.training:TrainConfig", "certify.zoo.losses:L2NNNLoss",
                                  "certify.zoo:models", "certify.checkpoint:LoadedModel",
                                  "certify.checkpoints:LoadedModel", "certify.checkpoints.loading:load_model"])
def test_other_lipcert_modules_may_not_be_named_by_a_file(spec):
    from certify.checkpoints import resolve_class
    from certify.errors import UnsafeCheckpointError

    with pytest.raises(UnsafeCheckpointError):
        resolve_class(spec, trusted_modules=())


@pytest.mark.parametrize("spec", ["certify.models:FAMILIES", "certify.models:get_family", "certify.layers:lp_dist",
                                  "certify.models:__builtins__", "certify.zoo.models:FAMILIES",
                                  "certify.zoo.layers:lp_dist", "certify.zoo.models:__builtins__"])
def test_non_module_names_in_lipcert_modules_are_refused(spec, base, tmp_path):
    path = _state_dict_file(tmp_path / "sd.pt", {"class": spec, "kwargs": {}})
    cli_refuses(path, base["data"])


@pytest.mark.parametrize("meta", [{"lipschitz": 5}, {"input_shape": 7}, {"bounds": ["a", "b"]},
                                  {"lipschitz": {"norm": "l2", "kind": "per-logit", "constant": "big"}},
                                  {"input_shape": [1, -2, 2]}, {"num_classes": 1e300}, {"mean": [1], "std": 3}])
def test_broken_metadata_is_one_line(meta, base, tmp_path):
    def edit(m):
        m["extra/lipcert.json"] = json.dumps(meta).encode()
        return m

    path = rewrite_pt2(base["good"], tmp_path / "meta.pt2", edit)
    cli_refuses(path, base["data"], message="model metadata")


@pytest.mark.parametrize("fmt", ["state_dict", "torchscript"])
def test_crc_damaged_zip_checkpoints_are_refused(fmt, base, tmp_path):
    from certify import Architecture

    from .conftest import Affine as _Affine

    good = save_model(_Affine(torch.eye(4)[:3]), tmp_path / f"m_{fmt}", ModelMetadata(input_shape=SHAPE),
                      format=fmt, example_input=torch.zeros(2, *SHAPE),
                      architecture=Architecture(cls="certify.layers:L2Linear", kwargs={}))
    with zipfile.ZipFile(good) as zf:
        biggest = max(zf.infolist(), key=lambda i: i.file_size)
    raw = bytearray(good.read_bytes())
    name_len = int.from_bytes(raw[biggest.header_offset + 26:biggest.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[biggest.header_offset + 28:biggest.header_offset + 30], "little")
    raw[biggest.header_offset + 30 + name_len + extra_len] ^= 0xFF
    path = tmp_path / f"crc_{fmt}"
    path.write_bytes(bytes(raw))
    message = cli_refuses(path, base["data"])
    assert "CRC" in message or "damaged" in message
