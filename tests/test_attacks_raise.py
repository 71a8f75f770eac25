"""Errors of the attack API: bad input (exit 2) and violated certificates (exit 3)."""

from __future__ import annotations

import pytest
import torch

from attacks import ATTACKS, attack_class, evaluate
from attacks.pgd import PGD
from certify.checkpoints import LipschitzClaim
from certify.errors import BadInputError, CertificateViolation
from certify.threat import Norm
from .helpers_attacks import blob_data, lipschitz_mlp, loaded

SHAPE = (1, 4, 4)


@pytest.fixture(scope="module")
def lip_model(tmp_path_factory):
    return loaded(lipschitz_mlp(16, 24, 3, seed=1), tmp_path_factory.mktemp("r") / "m.pt2", SHAPE,
                  LipschitzClaim("l2", "vector"))


@pytest.fixture(scope="module")
def false_claim(tmp_path_factory):
    """Logits 8-Lipschitz, but the metadata claims 1: the certificate is a lie an attack must expose."""
    return loaded(lipschitz_mlp(16, 24, 3, seed=1, scale=8.0), tmp_path_factory.mktemp("f") / "m.pt2", SHAPE,
                  LipschitzClaim("l2", "vector"))


@pytest.mark.parametrize("kwargs,match", [
    ({"attacks": ["nope"]}, "unknown attack 'nope'; valid attacks are"),
    ({"attacks": ["cw"], "norm": "linf"}, "does not support norm linf"),
    ({"attacks": ["pgd", "pgd"]}, "lists an attack twice"),
    ({"attacks": []}, "at least one attack"),
    ({"steps": (0,)}, "^steps expects"),
    ({"steps": (10, 10)}, "^steps expects"),
    ({"restarts": 0}, "^restarts must be at least 1"),
    ({"check_certificates": -1}, "^check_certificates must be"),
    ({"eps": [0.0]}, "^eps must be positive"),
    ({"norm": "l1"}, "^norm must be one of l2, linf"),
    ({"batch_size": 0}, "batch size"),
], ids=repr)
def test_bad_input(lip_model, kwargs, match):
    args = {"norm": "l2", "eps": [0.1], **kwargs}
    with pytest.raises(BadInputError, match=match):
        evaluate(lip_model, blob_data(8, SHAPE, 3), **args)


def test_check_certificates_needs_a_certificate(tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 3))
    model = loaded(net, tmp_path / "m.pt2", SHAPE)  # LayerNorm has no Lipschitz rule: unverifiable
    with pytest.raises(BadInputError, match="^check_certificates needs a certificate"):
        evaluate(model, blob_data(8, SHAPE, 3), norm="l2", eps=[0.1], check_certificates=5)


def test_false_lipschitz_claim_is_refused(false_claim):
    data = blob_data(64, SHAPE, 3, seed=5)
    with pytest.raises(BadInputError, match="could not be verified"):
        evaluate(false_claim, data, norm="l2", eps=[0.01], attacks=["pgd"], check_certificates=30, seed=0)


def test_assumed_false_lipschitz_claim_is_a_hard_error(false_claim):
    data = blob_data(64, SHAPE, 3, seed=5)
    with pytest.raises(CertificateViolation, match=r"point \d+: certified radius .* at distance") as info:
        evaluate(false_claim, data, norm="l2", eps=[0.01], attacks=["pgd"], check_certificates=30, seed=0,
                 assume_lipschitz=True)
    report = info.value.report
    assert report.violations and all(v.distance < v.radius for v in report.violations)
    assert info.value.exit_code == 3


def test_norms_are_parsed_once_into_norm_objects():
    assert all(isinstance(n, Norm) for cls in ATTACKS.values() for n in cls.norms)
    assert PGD().check_norm("L2") is Norm.L2
    with pytest.raises(BadInputError, match=r"attack 'cw' supports norms \['l2'\], got 'linf'") as info:
        ATTACKS["cw"]().check_norm(Norm.LINF)
    assert info.value.param == "norm"
    with pytest.raises(BadInputError, match="attack 'ddn' does not support norm linf; for linf use one of") as info:
        attack_class("ddn", "linf")
    assert info.value.param == "norm"  # the CLI says --norm


def test_attack_rejects_bad_settings():
    with pytest.raises(BadInputError, match="steps and restarts must be"):
        PGD(steps=0)
    with pytest.raises(BadInputError, match="expected loss in"):
        PGD(loss="hinge")


def test_bad_per_example_eps(lip_model):
    x = torch.rand(4, *SHAPE)
    with pytest.raises(BadInputError, match="eps must be positive"):
        ATTACKS["pgd"]()(lip_model.module, x, torch.zeros(4, dtype=torch.long), norm="l2", eps=torch.tensor([0.1, -1.0, 0.1, 0.1]))
