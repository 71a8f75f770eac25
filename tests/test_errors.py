"""The bad-input catalogue: every case ends in one `Error: …` line, its documented exit
code, no traceback and no output file.  docs/errors.md is generated from CASES.

Regenerate the doc with:  LIPCERT_REGEN_DOCS=1 python -m pytest tests/test_errors.py
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from certify import LipschitzClaim, ModelMetadata, save_model
from certify.cli import main

from .conftest import Affine

REPO = Path(__file__).resolve().parents[1]
SHAPE = (1, 2, 2)


@dataclass(frozen=True)
class Case:
    id: str
    what: str
    argv: tuple[str, ...]  # {good}, {data}, {out}, … are filled from the fixture files
    code: int
    message: str  # a fragment the one-line message must contain

    def __repr__(self) -> str:
        return self.id


C = "certify"
GOOD = (C, "{good}", "--data", "{data}", "--norm", "l2")
CASES: list[Case] = [
    # --- models
    Case("missing-model", "model file does not exist", (C, "{missing}", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "does not exist"),
    Case("model-is-directory", "a directory given as the model", (C, "{dir}", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "is a directory"),
    Case("empty-model", "empty model file", (C, "{empty}", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "is empty"),
    Case("truncated-model", "truncated torch.export archive", (C, "{truncated}", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "torch.export"),
    Case("unknown-format", "a file in no known format", (C, "{text}", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "unknown format"),
    Case("pickle-payload", "a pickle that would run code", (C, "{pickle}", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "--trust-checkpoint"),
    Case("state-dict-no-arch", "a state_dict without an architecture", (C, "{sd}", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "--arch"),
    Case("shape-mismatch", "state_dict that does not fit the architecture", (C, "{sd}", "--arch", "tests.test_errors:Tiny", "--arch-kwargs", '{{"classes": 5}}', "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "does not match the architecture"),
    Case("bad-arch", "architecture that cannot be imported", (C, "{sd}", "--arch", "no_such_module:Net", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "cannot import"),
    Case("bad-arch-kwargs", "--arch-kwargs that is not a JSON object", (C, "{sd}", "--arch", "tests.test_errors:Tiny", "--arch-kwargs", "[1]", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "JSON object"),
    Case("nan-weights", "weights with NaN", (C, "{nan_sd}", "--arch", "tests.test_errors:Tiny", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "NaN or Inf"),
    Case("wrong-class-count", "labels beyond the model's outputs", (*GOOD, "--eps", "1", "--data", "{data_many_labels}"), 2, "labels go up to"),
    Case("model-input-mismatch", "data shape differs from the model input", (*GOOD, "--eps", "1", "--data", "demo"), 2, "does not match the model input"),
    Case("yaml-spec-syntax", "model spec YAML with a syntax error", (C, "{sd}", "--arch", "{bad_yaml}", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "YAML syntax error at line"),
    Case("yaml-spec-unknown-key", "model spec YAML with an unknown key", (C, "{sd}", "--arch", "{unknown_yaml}", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "unknown keys"),
    Case("yaml-spec-wrong-type", "model spec YAML whose layer has the wrong type", (C, "{sd}", "--arch", "{type_yaml}", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "layers[0]"),
    # --- data
    Case("missing-data", "data path that does not exist", (C, "{good}", "--data", "{missing}", "--norm", "l2", "--eps", "1"), 2, "neither a file"),
    Case("no-data", "no --data and no dataset in the metadata", (C, "{good}", "--norm", "l2", "--eps", "1"), 2, "pass --data"),
    Case("nan-inputs", "inputs with NaN", (*GOOD, "--eps", "1", "--data", "{data_nan}"), 2, "NaN"),
    Case("out-of-bounds", "inputs outside the model's bounds", (*GOOD, "--eps", "1", "--data", "{data_big}"), 2, "bounds"),
    Case("negative-label", "negative labels", (*GOOD, "--eps", "1", "--data", "{data_neg}"), 2, "labels must be"),
    Case("empty-dataset", "a dataset with no examples", (*GOOD, "--eps", "1", "--data", "{data_empty}"), 2, "is empty"),
    Case("limit-zero", "--limit 0", (*GOOD, "--eps", "1", "--limit", "0"), 2, "--limit"),
    Case("npz-missing-arrays", ".npz without x and y", (*GOOD, "--eps", "1", "--data", "{data_noxy}"), 2, "'x' and 'y'"),
    Case("mnist-no-root", "--data mnist without --data-root", (*GOOD, "--eps", "1", "--data", "mnist"), 2, "--data-root"),
    # --- options
    Case("eps-negative", "negative ε", (*GOOD, "--eps", "-0.5"), 2, "positive"),
    Case("eps-zero", "ε = 0", (*GOOD, "--eps", "0"), 2, "positive"),
    Case("eps-duplicate", "the same ε twice", (*GOOD, "--eps", "0.5", "--eps", "0.5"), 2, "twice"),
    Case("eps-not-a-number", "ε that is not a number", (*GOOD, "--eps", "big"), 2, "expects numbers"),
    Case("unknown-norm", "an unknown norm", (C, "{good}", "--data", "{data}", "--norm", "l3", "--eps", "1"), 2, "l3"),
    Case("unknown-certificate", "an unknown certificate", (*GOOD, "--eps", "1", "--certificate", "magic"), 2, "magic"),
    Case("bad-lipschitz-constant", "a non-positive Lipschitz constant", (*GOOD, "--eps", "1", "--lipschitz-constant", "0"), 2, "positive"),
    Case("lipschitz-below-declared", "a constant below the declared one (would over-claim)", (*GOOD, "--eps", "1", "--lipschitz-constant", "0.5"), 2, "1 > 0.5"),
    Case("batch-size-zero", "--batch-size 0", (*GOOD, "--eps", "1", "--batch-size", "0"), 2, "batch-size"),
    Case("cuda-missing", "--device cuda without CUDA", (*GOOD, "--eps", "1", "--device", "cuda"), 2, "CUDA"),
    Case("unknown-device", "an unknown device", (*GOOD, "--eps", "1", "--device", "tpu"), 2, "--device"),
    Case("unwritable-output", "an output path in a missing directory", (*GOOD, "--eps", "1", "--json", "{missing}/out.json"), 2, "does not exist"),
    Case("output-is-directory", "an output path that is a directory", (*GOOD, "--eps", "1", "--json", "{dir}"), 2, "is a directory"),
    Case("resume-not-json", "--resume with a file that is not JSON", (*GOOD, "--eps", "1", "--resume", "{text}"), 2, "not valid JSON"),
    Case("resume-other-model", "--resume with results of another model", (*GOOD, "--eps", "1", "--resume", "{other_results}"), 2, "sha256"),
]


class Tiny(nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        self.lin = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


class Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("catalogue")
    w = torch.eye(4)[:3]
    meta = ModelMetadata(input_shape=SHAPE, lipschitz=LipschitzClaim("l2", "per-logit", 1.0))
    good = save_model(Affine(w), d / "good.pt2", meta, example_input=torch.zeros(2, *SHAPE))
    truncated = d / "truncated.pt2"
    truncated.write_bytes(good.read_bytes()[:4000])
    (d / "empty.pt").write_bytes(b"")
    (d / "text.txt").write_text("not a model")
    torch.save(Payload(str(d / "PWNED")), d / "pickle.pt")
    torch.save(Tiny().state_dict(), d / "sd.pt")
    nan = Tiny().state_dict()
    nan["lin.weight"][0, 0] = float("nan")
    torch.save(nan, d / "nan_sd.pt")
    (d / "bad.yaml").write_text("layers:\n  - Linear: [4, 3\n")
    (d / "unknown.yaml").write_text("class: tests.test_errors:Tiny\nkwarg: {}\n")
    (d / "type.yaml").write_text("layers:\n  - 42\n")
    x = np.zeros((4, 1, 2, 2), dtype=np.float32)
    np.savez(d / "data.npz", x=x, y=np.array([0, 1, 2, 0]))
    np.savez(d / "data_many_labels.npz", x=x, y=np.array([0, 1, 2, 9]))
    x_nan = x.copy()
    x_nan[0, 0, 0, 0] = np.nan
    np.savez(d / "data_nan.npz", x=x_nan, y=np.array([0, 1, 2, 0]))
    np.savez(d / "data_big.npz", x=x + 3.0, y=np.array([0, 1, 2, 0]))
    np.savez(d / "data_neg.npz", x=x, y=np.array([0, -1, 2, 0]))
    np.savez(d / "data_empty.npz", x=x[:0], y=np.array([], dtype=np.int64))
    np.savez(d / "data_noxy.npz", images=x)
    (d / "dir").mkdir()
    (d / "other.json").write_text('{"command": "certify", "model": {"sha256": "0"}, "per_example": {}}')
    return {
        "good": str(good), "truncated": str(truncated), "empty": str(d / "empty.pt"), "text": str(d / "text.txt"),
        "pickle": str(d / "pickle.pt"), "marker": str(d / "PWNED"), "sd": str(d / "sd.pt"),
        "nan_sd": str(d / "nan_sd.pt"), "bad_yaml": str(d / "bad.yaml"), "unknown_yaml": str(d / "unknown.yaml"),
        "type_yaml": str(d / "type.yaml"), "missing": str(d / "missing"), "dir": str(d / "dir"),
        "data": str(d / "data.npz"), "data_many_labels": str(d / "data_many_labels.npz"),
        "data_nan": str(d / "data_nan.npz"), "data_big": str(d / "data_big.npz"), "data_neg": str(d / "data_neg.npz"),
        "data_empty": str(d / "data_empty.npz"), "data_noxy": str(d / "data_noxy.npz"),
        "other_results": str(d / "other.json"), "out": str(d / "out.json"),
    }


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_catalogue(case: Case, files, tmp_path):
    if case.id == "cuda-missing" and torch.cuda.is_available():
        pytest.skip("CUDA is available")
    out = tmp_path / "result.json"
    argv = [a.format(**files) for a in case.argv]
    if "--json" not in argv:
        argv += ["--json", str(out)]
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == case.code, (res.stdout, res.stderr, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert case.message in lines[0]
    assert "Traceback" not in res.output
    assert not out.exists(), "a failed run must not leave an output file"
    assert not Path(files["marker"]).exists(), "a pickle payload ran"


def test_catalogue_is_large_enough():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


def errors_markdown() -> str:
    lines = ["# Bad-input catalogue", "",
             "Each row is a test in `tests/test_errors.py`: lipcert prints one `Error: …` line (no traceback),",
             "exits with the code shown and leaves no output file behind.", "",
             "| case | input | exit | message contains |", "|---|---|---|---|"]
    lines += [f"| `{c.id}` | {c.what} | {c.code} | `{c.message}` |" for c in CASES]
    return "\n".join(lines) + "\n"


def test_errors_doc_is_current():
    path = REPO / "docs" / "errors.md"
    if os.environ.get("LIPCERT_REGEN_DOCS") == "1":
        path.write_text(errors_markdown(), encoding="utf-8")
    assert path.read_text(encoding="utf-8") == errors_markdown()
