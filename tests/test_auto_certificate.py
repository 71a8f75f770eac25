"""The ``auto`` certificate (certify/certificates/auto_plan.py): the largest radius over the sound
methods that ran, the method recorded per point, and ``--certificate-budget``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from certify.certificates import certify
from certify.budget import parse_budget
from certify.certificates.auto_plan import method_names
from certify.cli import main
from certify.data import Dataset
from certify.errors import BadInputError
from certify.checkpoints.metadata import LipschitzClaim
from certify.results import certify_json
from tests.helpers_lipschitz import loaded, npz_data, orthogonal_mlp, saved

SHAPE = (16,)


pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 4)).eval()


def _data(module: nn.Module, n: int = 20, seed: int = 1) -> Dataset:
    x = torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        logits = module(x)
    y = logits.argmax(1)
    y[:2] = (y[:2] + 1) % logits.shape[1]  # two wrong points: never certified by any method
    return Dataset(x, y, "random", "test")


def _radii(model, data, certificate, budget, batch_size=8):  # type: ignore[no-untyped-def]
    rep = certify(model, data, norm="linf", eps=[0.01, 0.04], certificate=certificate, certificate_budget=budget,
                  batch_size=batch_size)
    return rep, rep.examples.radius


def test_auto_is_the_largest_radius_of_the_methods_and_names_it() -> None:
    module = _mlp()
    model, data = loaded(module, SHAPE), _data(module)
    _, lip = _radii(model, data, "auto", "0")
    _, crown = _radii(model, data, "crown", None)
    _, alpha = _radii(model, data, "alpha-crown", None)
    rep, auto = _radii(model, data, "auto", "unlimited")
    correct = rep.examples.correct
    assert (auto[correct] >= lip[correct]).all() and (auto[correct] >= crown[correct]).all()
    # α-CROWN bisects a bracket that starts at the best radius so far: equal up to that bracket's resolution
    step = (np.maximum(crown, lip) + 1.0 / 2**14) / 2**8
    assert (auto[correct] >= alpha[correct] - step[correct]).all()
    names = np.array(method_names(rep.examples.radius_method), dtype=object)
    own = {"pairwise": lip, "crown": crown}
    for m, r in own.items():
        assert np.array_equal(auto[names == m], r[names == m])
    assert set(names[correct & (auto > 0)]) <= {"pairwise", "crown", "alpha-crown"}
    assert (names[auto == 0] == None).all()  # noqa: E711  (nothing certified: no method)
    assert (crown[correct] > lip[correct]).any()  # CROWN beats pairwise Lipschitz bounds on this ReLU net
    doc = json.loads(json.dumps(certify_json(rep), allow_nan=False))
    counts = {(row["eps"], row["method"]): row["certified_count"] for row in doc["certified_by"]}
    for r in doc["results"]:
        assert sum(c for (e, _), c in counts.items() if e == r["eps"]) == r["certified_count"]
    assert doc["certificate_methods"] == ["pairwise", "crown", "alpha-crown"]
    assert doc["certificate_budget"]["hit"] is False


def test_budget_runs_out_and_the_rest_keep_the_cheaper_radii() -> None:
    module = _mlp(2)
    model, data = loaded(module, SHAPE), _data(module, n=24)
    _, lip = _radii(model, data, "auto", "0")
    _, crown = _radii(model, data, "crown", None)
    rep, auto = _radii(model, data, "auto", "15")  # one CROWN bisection (14 steps + 1) on the first batch only
    assert rep.plan.budget.hit and rep.plan.budget.passes == 15
    first = rep.examples.correct & (np.arange(24) < 8)
    rest = rep.examples.correct & (np.arange(24) >= 8)
    assert np.array_equal(auto[first], np.maximum(lip, crown)[first])
    assert np.array_equal(auto[rest], lip[rest])
    assert certify_json(rep)["certificate_budget"]["hit"] is True


def test_lipschitz_models_get_both_certificates() -> None:
    module = orthogonal_mlp(16, 16, 4)
    model = loaded(module, SHAPE, lipschitz=LipschitzClaim("l2", "per-logit", 1.0))
    data = _data(module)
    rep = certify(model, data, norm="l2", eps=[0.05], certificate_budget="unlimited")
    assert rep.plan.methods[0] == "l2-multi" and "crown" in rep.plan.methods
    old = certify(model, data, norm="l2", eps=[0.05], certificate_budget="0")
    assert old.plan.certificate == rep.plan.certificate == "l2-multi"
    assert (rep.examples.radius >= old.examples.radius).all()
    doc = certify_json(old)
    assert doc["certificate_methods"] == ["l2-multi"] and doc["bound_propagation_skipped"] == "certificate budget 0"


def test_a_model_bounds_cannot_handle_keeps_its_lipschitz_certificate() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    model, data = loaded(module, SHAPE), _data(module)
    rep = certify(model, data, norm="linf", eps=[0.01], certificate_budget="unlimited")
    assert rep.plan.bounds is None and "tanh" in rep.plan.bounds_skipped.lower()
    assert set(method_names(rep.examples.radius_method)) <= {"pairwise", None}


@pytest.mark.parametrize("text, expected", [("30s", (30.0, None)), ("1.5s", (1.5, None)), ("200", (None, 200)),
                                            ("unlimited", (None, None))])
def test_budget_parses(text: str, expected: tuple) -> None:
    spec = parse_budget(text)
    assert (spec.seconds, spec.passes) == expected


@pytest.mark.parametrize("bad", ["abc", "-3", "10m", "1e3", "", "3 passes"])
def test_bad_budget_is_one_error_line(tmp_path, bad: str) -> None:
    with pytest.raises(BadInputError):
        parse_budget(bad)
    saved(_mlp(), SHAPE, tmp_path / "m.pt2")
    data = npz_data(tmp_path / "d.npz", SHAPE, n=4, k=4)
    res = CliRunner().invoke(main, ["certify", str(tmp_path / "m.pt2"), "--data", data, "--norm", "linf", "--eps",
                                    "0.01", "--certificate-budget", bad])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("Error:") and "--certificate-budget" in lines[-1] and "Traceback" not in res.stderr


def test_cli_auto_records_the_method_per_point(tmp_path) -> None:
    saved(_mlp(), SHAPE, tmp_path / "m.pt2")
    data = npz_data(tmp_path / "d.npz", SHAPE, n=12, k=4)
    csv = tmp_path / "ex.csv"
    res = CliRunner().invoke(main, ["certify", str(tmp_path / "m.pt2"), "--data", data, "--norm", "linf", "--eps",
                                    "0.01", "--json", "-", "-q", "--per-example", str(csv)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    pe = doc["per_example"]
    assert all((m is None) == (r == 0) for m, r in zip(pe["radius_method"], pe["radius"]))
    assert doc["settings"]["certificate_budget"] == "30s"
    assert csv.read_text().splitlines()[0].endswith(",radius,radius_method")


class _Clock:
    """A fake ``time.perf_counter``: every reading advances it by ``tick`` seconds."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def test_a_stopped_bisection_keeps_only_radii_it_certified() -> None:
    from certify.bounds import BoundSettings, certified, certified_radii, network_from_module
    from certify.threat import Norm

    module = _mlp(3)
    net = network_from_module(module, SHAPE)
    x = torch.rand(10, *SHAPE, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    pred = module(x.float()).argmax(1)
    settings = BoundSettings(method="crown", norm=Norm.LINF, lo=0.0, hi=1.0)
    full = certified_radii(net, x, pred, settings)
    assert (full > 0).any()
    for calls in range(0, 40, 3):  # stop at the calls-th checkpoint, wherever it falls in a pass
        seen = iter(range(10**6))
        r = certified_radii(net, x, pred, settings, stop=lambda: next(seen) >= calls)
        assert (r <= full).all()
        pos = r > 0
        if pos.any():
            assert certified(net, x[pos], pred[pos], r[pos], settings).all()


def test_a_method_too_costly_for_the_time_budget_is_dropped_after_one_probe(monkeypatch) -> None:
    import certify.budget as budget

    module = _mlp(2)
    model, data = loaded(module, SHAPE), _data(module, n=24)
    _, lip = _radii(model, data, "auto", "0")
    clock = _Clock(tick=1.0)  # every pass "takes" seconds: one check exceeds 25% of 30 s / 15 checks
    monkeypatch.setattr(budget, "time", clock)
    rep, auto = _radii(model, data, "auto", "30s")
    assert np.array_equal(auto, lip)  # nothing from bound propagation, and nothing lost
    spent = rep.plan.budget
    assert spent.hit and spent.passes == 0 and not spent.usable("crown")
    assert spent.seconds < 5  # the probe, stopped at its first checkpoint; α-CROWN never probed


def test_a_time_budget_takes_only_the_points_its_measured_rate_fits() -> None:
    from certify.budget import CertificateBudget, parse_budget

    b = CertificateBudget(parse_budget("10s"))
    assert b.affordable("crown", 100, 15) == 100 and not b.hit  # rate unknown: probed first, then all
    b.measured("crown", 1.5, 15, complete=True)  # 0.1 s per point-check: 1.5 s per point
    assert b.affordable("crown", 100, 15) == 6 and b.hit
    b.measured("crown", 0.15, 15, complete=True)  # a faster batch: the better rate is kept
    assert b.affordable("crown", 100, 15) == 66
    b.measured("alpha-crown", 0.1, 1, complete=False)
    assert not b.usable("alpha-crown") and b.affordable("alpha-crown", 5, 9) == 0
    unlimited = CertificateBudget(parse_budget("unlimited"))
    assert unlimited.affordable("crown", 100, 15) == 100 and not unlimited.needs_probe("crown")


def test_resume_under_a_time_budget_accepts_radii_another_machine_speed_gave(monkeypatch) -> None:
    import certify.budget as budget
    from certify.certificates import resume_examples
    from certify.errors import BadInputError as Bad

    module = _mlp(2)
    model, data = loaded(module, SHAPE), _data(module, n=24)
    first = certify(model, data, norm="linf", eps=[0.01], certificate_budget="30s", batch_size=8)
    doc = json.loads(json.dumps(certify_json(first)))
    names = method_names(first.examples.radius_method)
    assert "crown" in names  # CROWN raised some radii in the first run
    monkeypatch.setattr(budget, "time", _Clock(tick=1.0))  # a "slow machine": CROWN is dropped by its probe
    again = certify(model, data, norm="linf", eps=[0.01], certificate_budget="30s", batch_size=8,
                    resume=resume_examples(doc, model, data, "linf"))
    assert set(method_names(again.examples.radius_method)) <= {"pairwise", None}  # the recomputed radii are kept
    lip_row = names.index("pairwise")
    doc["per_example"]["radius"][lip_row] *= 2  # an edited Lipschitz radius is still caught
    with pytest.raises(Bad, match="radius"):
        certify(model, data, norm="linf", eps=[0.01], certificate_budget="30s", batch_size=8,
                resume=resume_examples(doc, model, data, "linf"))


# --------------------------------------------------------------------------- attack: certify-first with a budget


def _attack(tmp_path, *extra: str) -> dict:  # type: ignore[type-arg]
    model = tmp_path / "m.pt2"
    if not model.exists():
        saved(_mlp(), SHAPE, model)
    data = tmp_path / "d.npz"
    if not data.exists():
        module = _mlp()
        x = torch.rand(40, *SHAPE, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            y = module(x).argmax(1)
        np.savez(data, x=x.numpy(), y=y.numpy())
    res = CliRunner().invoke(main, ["attack", str(model), "--data", str(data), "--norm", "linf", "--eps", "0.01,0.03",
                                    "--attacks", "pgd", "--steps", "20", "--json", "-", "-q", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_attack_certify_first_spends_a_budget_on_bound_propagation_and_never_attacks_what_it_certifies(tmp_path):
    """Lipschitz-only by default (budget 0); with a budget CROWN certifies more points, they are not
    attacked, each carries its method, and strong attacks at 0.999·radius break none of them."""
    lip = _attack(tmp_path)
    auto = _attack(tmp_path, "--certificate-budget", "unlimited", "--check-certificates", "40")
    assert "certificate_budget" not in lip["settings"] and auto["settings"]["certificate_budget"] == "unlimited"
    r_lip, r_auto = np.array(lip["per_example"]["radius"]), np.array(auto["per_example"]["radius"])
    assert (r_auto >= r_lip).all() and (r_auto > r_lip).any()
    methods = auto["per_example"]["radius_method"]
    assert {"crown"} <= set(methods) <= {"pairwise", "crown", "alpha-crown", None}
    assert set(lip["per_example"]["radius_method"]) <= {"pairwise", None}
    for doc in (lip, auto):
        status = np.array(doc["per_example"]["status"])
        radius = np.array(doc["per_example"]["radius"])
        for j, e in enumerate(doc["eps"]):
            assert ((status[:, j] == "certified") == (radius > e)).all()  # every point is correct here
            by = sum(r["certified_count"] for r in doc["certified_by"] if r["eps"] == e)
            assert by == int((status[:, j] == "certified").sum()) == doc["certified_skipped"][f"{e:g}"]
    assert sum(s["certified"] for s in auto["status"]) > sum(s["certified"] for s in lip["status"])
    assert auto["certificates_checked"] == 40 and auto["violations"] == []
    assert auto["certificate_budget"]["hit"] is False


def test_attack_refuses_a_bad_certificate_budget_in_one_line(tmp_path):
    saved(_mlp(), SHAPE, tmp_path / "m.pt2")
    res = CliRunner().invoke(main, ["attack", str(tmp_path / "m.pt2"), "--data", "demo", "--norm", "linf", "--eps",
                                    "0.01", "--certificate-budget", "soon"])
    assert res.exit_code == 2 and res.stderr.strip().splitlines()[-1].startswith("Error:")
    assert "--certificate-budget" in res.stderr and "Traceback" not in res.stderr


# --------------------------------------------------------------------------- analyze and suites: the same budget


def _analyze(tmp_path, *extra: str) -> dict:  # type: ignore[type-arg]
    _attack(tmp_path, "--limit", "1")  # writes the model and the data
    res = CliRunner().invoke(main, ["analyze", str(tmp_path / "m.pt2"), "--data", str(tmp_path / "d.npz"), "--norm",
                                    "linf", "--eps", "0.01,0.03", "--attacks", "pgd", "--steps", "20",
                                    "--no-train-margins", "--json", "-", "-q", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_analyze_and_suites_spend_a_budget_on_certify_and_the_attacks_certify_first_alike(tmp_path):
    """``analyze --certificate-budget`` (and a suite's ``certify.certificate_budget``) certify more points
    with CROWN, and the attacks' certify-first uses the same radii: the points certify certifies are the
    ones not attacked; without a budget both stay Lipschitz-only, as before."""
    lip = _analyze(tmp_path)
    auto = _analyze(tmp_path, "--certificate-budget", "unlimited")
    r_lip = np.array(lip["certify"]["per_example"]["radius"])
    r_auto = np.array(auto["certify"]["per_example"]["radius"])
    assert (r_auto >= r_lip).all() and (r_auto > r_lip).any()
    assert {"crown"} <= set(auto["certify"]["per_example"]["radius_method"])
    assert set(lip["certify"]["per_example"]["radius_method"]) <= {"pairwise", None}
    assert auto["certify"]["settings"]["certificate_budget"] == "unlimited"
    for doc in (lip, auto):
        cert, attack = doc["certify"], doc["attack"]
        assert attack["per_example"]["radius"] == cert["per_example"]["radius"]  # one plan for both
        assert attack["per_example"]["radius_method"] == cert["per_example"]["radius_method"]
        for row in cert["results"]:
            assert attack["certified_skipped"][f"{row['eps']:g}"] == row["certified_count"]
        assert attack["violations"] == []
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"model: {tmp_path / 'm.pt2'}\ndata: {tmp_path / 'd.npz'}\nnorm: linf\neps: [0.01, 0.03]\n"
                     "attacks: {names: [pgd], steps: 20}\nanalysis: {train_margins: false}\n"
                     "certify: {certificate_budget: unlimited}\n")
    res = CliRunner().invoke(main, ["run", str(suite), "--json", str(tmp_path / "run.json"), "-q"])
    assert res.exit_code == 0, res.output
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["certify"]["per_example"]["radius"] == auto["certify"]["per_example"]["radius"]
    assert run["certify"]["per_example"]["radius_method"] == auto["certify"]["per_example"]["radius_method"]
    res = CliRunner().invoke(main, ["run", str(suite), "--certificate-budget", "0", "--json", str(tmp_path / "r0.json"),
                                    "-q"])  # the flag overrides the file: Lipschitz only again
    assert res.exit_code == 0, res.output
    run0 = json.loads((tmp_path / "r0.json").read_text())
    assert run0["certify"]["per_example"]["radius"] == lip["certify"]["per_example"]["radius"]


@pytest.mark.parametrize("value", ["soon", "-3", "3 minutes", "true"])
def test_a_suite_with_a_bad_certificate_budget_is_one_line_naming_the_key(tmp_path, value: str) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"model: m.pt2\nnorm: l2\ncertify:\n  certificate_budget: {value}\n")
    res = CliRunner().invoke(main, ["run", str(suite)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: ") and "line 4: key 'certify.certificate_budget' must be a certificate budget" in line


@pytest.mark.parametrize("command", ["analyze", "run"])
def test_analyze_and_run_refuse_a_bad_certificate_budget_in_one_line(tmp_path, command: str):
    saved(_mlp(), SHAPE, tmp_path / "m.pt2")
    (tmp_path / "s.yaml").write_text(f"model: {tmp_path / 'm.pt2'}\nnorm: linf\n")
    target = [str(tmp_path / "m.pt2"), "--data", "demo", "--norm", "linf"] if command == "analyze" else [
        str(tmp_path / "s.yaml")]
    res = CliRunner().invoke(main, [command, *target, "--certificate-budget", "soon"])
    assert res.exit_code == 2 and "--certificate-budget" in res.stderr and "Traceback" not in res.stderr
