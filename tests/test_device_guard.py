"""The device rule (docs/api.md, "Devices") on a machine without a GPU.

On CUDA, a tensor that lipcert creates on the default device meets a model on ``cuda:0`` and the
run dies with "Expected all tensors to be on the same device".  CI has no GPU, so these tests run
every command and the Python API under :func:`tests.helpers_device.explicit_devices`: any factory
call in lipcert's code without ``device=`` fails the test, whether or not a GPU would have noticed.
A static scan covers the code paths the runs do not reach.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from certify.cli import main

from .helpers_device import FACTORIES, ROOT, ImplicitDevice, explicit_devices

L2NNN = str(ROOT / "examples/models/fmnist_l2nnn.pt2")
CNN = str(ROOT / "examples/models/fmnist_baseline.pt2")
LINF = str(ROOT / "examples/models/fmnist_linf_dist.pt2")
QUICK = ("--data", "demo", "--limit", "12", "--batch-size", "6", "--device", "cpu", "-q")

COMMANDS = {
    "certify-l2": ("certify", L2NNN, "--norm", "l2", "--eps", "0.1", *QUICK),
    "certify-linf": ("certify", LINF, "--norm", "linf", "--eps", "8/255", *QUICK),
    "attack-l2": ("attack", CNN, "--norm", "l2", "--eps", "1.5", "--attacks", "pgd,apgd-ce,fgsm,ddn,fmn",
                  "--steps", "3", *QUICK),
    "attack-linf": ("attack", CNN, "--norm", "linf", "--eps", "8/255", "--attacks", "pgd,apgd-t,fb-pgd,deepfool",
                    "--steps", "3", *QUICK),
    "attack-check-certificates": ("attack", L2NNN, "--norm", "l2", "--eps", "0.5", "--attacks", "pgd", "--steps", "3",
                                  "--check-certificates", "2", *QUICK),
    "lipschitz": ("lipschitz", L2NNN, "--data", "demo", "--limit", "8", "--device", "cpu", "-q"),
    "lipschitz-linf": ("lipschitz", CNN, "--norm", "linf", "--device", "cpu", "-q"),
    "data-lipschitz": ("data-lipschitz", "demo", "--limit", "64", "--device", "cpu", "-q"),
    "analyze": ("analyze", L2NNN, "--norm", "l2", "--steps", "3", "--no-train-margins", *QUICK),
    "demo": ("demo", "--limit", "8", "--attack-steps", "2", "--device", "cpu", "-q"),
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_commands_name_the_device_of_every_tensor(name):
    with explicit_devices() as mode:
        res = CliRunner().invoke(main, [*COMMANDS[name], "--debug"] if name != "demo" else list(COMMANDS[name]))
    assert not mode.violations, mode.violations
    assert res.exit_code == 0, (res.stderr, res.exception)


def test_run_suite_names_the_device_of_every_tensor(tmp_path, monkeypatch):
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(f"""
        model: {{path: {L2NNN}, name: L2NNN}}
        data: {{source: demo, limit: 16}}
        norm: l2
        eps: [0, 0.1]
        attacks: {{names: [pgd], steps: [3]}}
        device: cpu
        gates: {{min_clean_accuracy: 0.1}}
    """))
    monkeypatch.chdir(tmp_path)
    with explicit_devices() as mode:
        res = CliRunner().invoke(main, ["run", str(suite), "-q"])
    assert not mode.violations, mode.violations
    assert res.exit_code == 0, (res.stderr, res.exception)


def test_python_api_with_the_model_already_loaded():
    from attacks import evaluate
    from certify import certify, load_dataset, load_model

    model, data = load_model(L2NNN), load_dataset("demo", limit=8)
    with explicit_devices() as mode:
        rep = certify(model, data, norm="l2", eps=[0.1], batch_size=8)  # device=None: the model's
        att = evaluate(model, data, norm="l2", eps=[0.5], attacks=["pgd"], steps=(2,), batch_size=8)
    assert not mode.violations, mode.violations
    assert rep.results[0].certified_count >= 0 and att.worst_case[0].robust_accuracy >= 0


def test_a_device_other_than_the_models_is_refused():
    from certify import BadInputError, certify, load_dataset, load_model
    from certify.device import run_device

    model = load_model(L2NNN)
    assert run_device(model.module) == torch.device("cpu")
    with pytest.raises(BadInputError, match="the model is on cpu but device meta was requested"):
        certify(model, load_dataset("demo", limit=4), norm="l2", eps=[0.1], device=torch.device("meta"))


def test_guard_catches_a_factory_without_device_put_back_into_the_analyser(monkeypatch):
    """Re-create ``analysis_inputs`` with the ``device=`` of its random batch removed, compiled as part of
    the analyser's own file: the guard must stop the analysis."""
    from certify.lipschitz import analysis, graph

    source = textwrap.dedent(inspect.getsource(graph.analysis_inputs))
    broken = source.replace(', dtype=torch.float64, device="cpu")', ", dtype=torch.float64)")
    assert broken != source, "analysis_inputs no longer draws its batch as this test expects; update the test"
    namespace = dict(vars(graph))
    exec(compile(broken, graph.__file__, "exec"), namespace)  # noqa: S102 - the analyser's code, one kwarg less
    monkeypatch.setattr(analysis, "analysis_inputs", namespace["analysis_inputs"])
    analysis._CACHE.clear()
    from certify import load_model
    from certify.lipschitz import analyse

    model = load_model(L2NNN)
    with explicit_devices(), pytest.raises(ImplicitDevice, match="torch.rand without device="):
        _analyse_unguarded(analyse, model)
    analysis._CACHE.clear()


def _analyse_unguarded(analyse, model):
    """``_analyse_graph`` turns any exception into an 'unverifiable' report; let the guard's through."""
    from certify.lipschitz import analysis

    original = analysis._unverifiable

    def reraise(norm, what, source="torch.export"):
        import sys

        err = sys.exc_info()[1]
        if isinstance(err, ImplicitDevice):
            raise err
        return original(norm, what, source)

    analysis._unverifiable = reraise
    try:
        analyse(model, norm="l2")
    finally:
        analysis._unverifiable = original


def _factory_calls_without_device(path: Path) -> list[str]:
    names = {f.__name__ for f in FACTORIES} - {"normal", "bernoulli"}
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                and not any(k.arg == "device" for k in node.keywords)):
            out.append(f"{path.relative_to(ROOT)}:{node.lineno}: torch.{node.func.attr}")
    return out


def test_no_factory_call_in_the_source_leaves_the_device_to_the_default():
    found = [hit for d in ("certify", "attacks", "examples") for p in sorted((ROOT / d).rglob("*.py"))
             for hit in _factory_calls_without_device(p)]
    assert found == []
