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

from .conftest import Affine, Tiny  # Tiny: named as tests.test_errors:Tiny by the cases

REPO = Path(__file__).resolve().parents[1]
SHAPE = (1, 2, 2)


@dataclass(frozen=True)
class Case:
    id: str
    what: str
    argv: tuple[str, ...]  # {good}, {data}, … are filled from the fixture files; {result}: the checked output
    code: int
    message: str  # a fragment the one-line message must contain
    out: str = "--json"  # the option that would write an output file (checked not to exist)
    full_disk: bool = False  # simulate a full disk while writing (exit 3)
    env: tuple[tuple[str, str], ...] = ()  # environment variables set for the run ({tmp}: the test's tmp_path)

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
    Case("float64-model", "a model whose parameters are float64", (C, "{f64}", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "convert it with model.float()"),
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
    # --- hostile and broken inputs (docs/security.md)
    Case("pt2-pickle-sample-inputs", "a .pt2 whose sample inputs hold a pickle payload", (C, "{pt2_pickle}", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "--trust-checkpoint"),
    Case("pt2-crc", "a .pt2 whose weight entry fails its zip CRC", (C, "{pt2_crc}", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "CRC"),
    Case("file-arch-untrusted", "a state_dict naming os:system as its architecture", (C, "{sd_os_system}", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "--trust-module"),
    Case("safetensors-arch-untrusted", "a safetensors header naming os:system as its architecture", (C, "{st_os_system}", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "--trust-module"),
    Case("safetensors-arch-bad-json", "a safetensors header whose architecture is not JSON", (C, "{st_bad_json}", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "not valid JSON"),
    Case("arch-not-module", "--arch naming a function, not an nn.Module class", (C, "{sd}", "--arch", "os:getcwd", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "not an nn.Module subclass"),
    Case("nan-weights-pt2", "a torch.export model with a NaN weight", (C, "{nan_pt2}", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "'lin.weight' has NaN or Inf"),
    Case("nan-logits", "a model whose logits are NaN", (C, "{nan_logits}", "--data", "{data}", "--norm", "l2", "--eps", "1", "--certificate", "l2-multi", "--assume-lipschitz"), 2, "NaN or Inf on example 0"),
    Case("inf-logits", "a model whose logits are infinite", (C, "{inf_logits}", "--data", "{data}", "--norm", "l2", "--eps", "1", "--certificate", "l2-multi", "--assume-lipschitz"), 2, "NaN or Inf on example 0"),
    Case("npz-truncated", "a truncated .npz", (*GOOD, "--eps", "1", "--data", "{npz_truncated}"), 2, "damaged or truncated"),
    Case("npz-crc", "a .npz whose member fails its CRC", (*GOOD, "--eps", "1", "--data", "{npz_crc}"), 2, "damaged or truncated"),
    Case("npz-strings", "a .npz whose images are strings", (*GOOD, "--eps", "1", "--data", "{npz_strings}"), 2, "uint8 or float array"),
    Case("labels-huge", "labels of 1e20", (*GOOD, "--eps", "1", "--data", "{npz_huge_labels}"), 2, "class indices"),
    Case("pt-data-dict", ".pt data holding a dict without x and y", (*GOOD, "--eps", "1", "--data", "{pt_dict}"), 2, "expected {'x': tensor"),
    Case("pt-data-string", ".pt data holding a string", (*GOOD, "--eps", "1", "--data", "{pt_string}"), 2, "expected {'x': tensor"),
    Case("idx-bad-header", "an idx file with a bad header", (*GOOD, "--eps", "1", "--data", "{idx_bad}"), 2, "idx header"),
    Case("corrupt-png", "a corrupt PNG in an image folder", (*GOOD, "--eps", "1", "--data", "{png_bad}"), 2, "cannot be read"),
    Case("seed-too-big", "--seed beyond 64 bits", (*GOOD, "--eps", "1", "--seed", "99999999999999999999999"), 2, "--seed"),
    Case("lipschitz-constant-auto", "--lipschitz-constant with --certificate auto on a model without a claim", (C, "{unclaimed}", "--data", "{data}", "--norm", "l2", "--eps", "1", "--lipschitz-constant", "1000"), 2, "--lipschitz-constant 1000 cannot apply to --certificate auto"),
    Case("output-is-model", "--json naming the model file", (*GOOD, "--eps", "1", "--json", "{good}"), 2, "is the model"),
    Case("output-is-data", "--per-example naming the data file", (*GOOD, "--eps", "1", "--per-example", "{data}"), 2, "is the data"),
    Case("output-unwritable", "--json under /proc (refused before the run)", (*GOOD, "--eps", "1", "--json", "/proc/x.json"), 2, "cannot write"),
    Case("outputs-all-or-none", "a bad --per-example path: the --json is not written either", (*GOOD, "--eps", "1", "--json", "{result}", "--per-example", "{missing}/x.csv"), 2, "does not exist"),
    Case("outputs-same-path", "--json and --per-example naming the same file", (*GOOD, "--eps", "1", "--per-example", "{result}"), 2, "both write"),
    Case("resume-other-certificate", "--resume of a l2-multi --assume-lipschitz partial under auto", (*GOOD, "--eps", "0.1", "--resume", "{assumed_json}"), 2, "certificate 'l2-multi'"),
    Case("resume-uneven-rows", "--resume with per-example lists of different lengths", (*GOOD, "--eps", "0.1", "--resume", "{uneven_json}"), 2, "different lengths"),
    Case("resume-forged-radius", "--resume with a forged radius", (*GOOD, "--eps", "0.1", "--resume", "{forged_radius_json}"), 2, "recomputing it gives"),
]

A = ("attack", "{good}", "--data", "{data}", "--norm", "l2")
ATTACK_CASES: list[Case] = [
    Case("attack-missing-model", "attack: model file does not exist", ("attack", "{missing}", "--data", "{data}", "--norm", "l2", "--eps", "1"), 2, "does not exist"),
    Case("attack-unknown-name", "attack: an unknown attack name", (*A, "--eps", "1", "--attacks", "magic"), 2, "unknown attack 'magic'"),
    Case("attack-wrong-norm", "attack: an attack that does not support the norm", (*A, "--eps", "1", "--attacks", "linf-pgd"), 2, "does not support --norm l2"),
    Case("attack-duplicate", "attack: the same attack twice", (*A, "--eps", "1", "--attacks", "pgd,pgd"), 2, "twice"),
    Case("attack-no-attacks", "attack: an empty --attacks list", (*A, "--eps", "1", "--attacks", ","), 2, "at least one attack"),
    Case("attack-steps-zero", "attack: --steps 0", (*A, "--eps", "1", "--steps", "0"), 2, "positive integers"),
    Case("attack-steps-not-int", "attack: --steps that is not an integer", (*A, "--eps", "1", "--steps", "many"), 2, "integers"),
    Case("attack-steps-duplicate", "attack: the same --steps twice", (*A, "--eps", "1", "--steps", "10,10"), 2, "distinct"),
    Case("attack-restarts-zero", "attack: --restarts 0", (*A, "--eps", "1", "--restarts", "0"), 2, "--restarts"),
    Case("attack-check-negative", "attack: --check-certificates -1", (*A, "--eps", "1", "--check-certificates", "-1"), 2, "--check-certificates"),
    Case("attack-check-without-certificate", "attack: --check-certificates on a model with no certificate", ("attack", "{unclaimed}", "--data", "{data}", "--norm", "l2", "--eps", "1", "--certificate", "l2-multi", "--check-certificates", "4"), 2, "needs a certificate"),
    Case("attack-eps-negative", "attack: negative ε", (*A, "--eps", "-1"), 2, "positive"),
    Case("attack-eps-duplicate", "attack: the same ε twice", (*A, "--eps", "0.5,0.5"), 2, "twice"),
    Case("attack-linf-eps-too-big", "attack: ℓ∞ ε larger than the input range (wrong scale, e.g. 8 for 8/255)", ("attack", "{good}", "--data", "{data}", "--norm", "linf", "--eps", "8"), 2, "8/255"),
    Case("attack-batch-size-zero", "attack: --batch-size 0", (*A, "--eps", "1", "--batch-size", "0"), 2, "--batch-size"),
    Case("attack-cuda-missing", "attack: --device cuda without CUDA", (*A, "--eps", "1", "--device", "cuda"), 2, "CUDA"),
    Case("attack-resume-other-eps", "attack: --resume from a run at other ε", (*A, "--eps", "1", "--attacks", "pgd", "--steps", "5", "--resume", "{attack_json}"), 2, "the partial results have eps [0.5]"),
    Case("attack-resume-other-model", "attack: --resume from a run of another model", ("attack", "{unclaimed}", "--data", "{data}", "--norm", "l2", "--eps", "0.5", "--attacks", "pgd", "--steps", "5", "--resume", "{attack_json}"), 2, "model sha256"),
    Case("attack-resume-certify-json", "attack: --resume from a certify JSON", (*A, "--eps", "0.5", "--resume", "{certify_json}"), 2, "partial 'lipcert attack' run"),
    Case("attack-unwritable-output", "attack: an output path in a missing directory", (*A, "--eps", "1", "--json", "{missing}/out.json"), 2, "does not exist"),
    Case("attack-resume-other-mode", "attack: --resume --independent of a cascade run", (*A, "--eps", "0.5", "--attacks", "pgd", "--steps", "5", "--independent", "--resume", "{attack_json}"), 2, "mode 'cascade'"),
    Case("attack-nan-logits", "attack: a model whose logits are NaN", ("attack", "{nan_logits}", "--data", "{data}", "--norm", "l2", "--eps", "1", "--no-certify-first"), 2, "NaN or Inf on example 0"),
    Case("attack-output-is-model", "attack: --json naming the model file", (*A, "--eps", "1", "--json", "{good}"), 2, "is the model"),
]
RUN_CASES: list[Case] = [
    Case("run-missing-suite", "run: suite file does not exist", ("run", "{missing}.yaml"), 2, "does not exist"),
    Case("run-yaml-syntax", "run: suite YAML with a syntax error", ("run", "{suite_syntax}"), 2, "YAML syntax error at line 4"),
    Case("run-unknown-key", "run: suite with an unknown key", ("run", "{suite_unknown}"), 2, "line 3: unknown key 'epsilon'"),
    Case("run-wrong-type", "run: suite whose key has the wrong type", ("run", "{suite_type}"), 2, "line 3: key 'eps'"),
    Case("run-nested-unknown-key", "run: suite with an unknown gate", ("run", "{suite_gate}"), 2, "unknown key 'gates.min_accuracy'"),
    Case("run-empty-suite", "run: an empty suite", ("run", "{empty_yaml}"), 2, "empty"),
    Case("run-no-model", "run: suite without a model", ("run", "{suite_no_model}"), 2, "'model'"),
    Case("run-bad-norm", "run: suite with an unknown norm", ("run", "{suite_bad_norm}"), 2, "l2 or linf"),
    Case("run-missing-model", "run: suite naming a missing model", ("run", "{suite_missing_model}"), 2, "does not exist"),
    Case("run-batch-size-zero", "run: suite with batch_size 0 (used to hang)", ("run", "{suite_batch_zero}"), 2, "key 'batch_size' must be an integer ≥ 1"),
    Case("run-batch-size-negative", "run: suite with batch_size -4 (used to hang)", ("run", "{suite_batch_negative}"), 2, "key 'batch_size' must be an integer ≥ 1"),
    Case("run-delegate-accuracy", "run: suite with delegate_accuracy 5", ("run", "{suite_delegate}"), 2, "from 0 to 1"),
    Case("run-seed-too-big", "run: suite with a seed beyond 64 bits", ("run", "{suite_seed}"), 2, "key 'seed'"),
    Case("run-billion-laughs", "run: a 'billion laughs' YAML alias bomb at a type error (message stays short and fast)", ("run", "{suite_laughs}"), 2, "key 'eps'"),
    Case("run-gate-percent", "run: a gate accuracy given as a percentage", ("run", "{suite_gate_percent}"), 2, "from 0 to 1"),
    Case("run-output-is-suite", "run: --json naming the suite file", ("run", "{suite_batch_zero_ok}", "--json", "{suite_batch_zero_ok}"), 2, "is the suite"),
]
GATE_CASES: list[Case] = [
    Case("gate-missing-results", "gate: results file does not exist", ("gate", "{missing}.json", "--config", "{gates}"), 2, "does not exist", out="--junit"),
    Case("gate-results-not-json", "gate: results file that is not JSON", ("gate", "{text}", "--config", "{gates}"), 2, "not valid JSON", out="--junit"),
    Case("gate-results-not-lipcert", "gate: a JSON object that is not lipcert's", ("gate", "{foreign_json}", "--config", "{gates}"), 2, "'command' key", out="--junit"),
    Case("gate-baseline-other-schema", "gate: baseline written by another schema version", ("gate", "{certify_json}", "--config", "{gates}", "--baseline", "{future_json}"), 2, "schema_version 99", out="--junit"),
    Case("gate-baseline-other-command", "gate: baseline from a command with no gate data", ("gate", "{certify_json}", "--config", "{gates}", "--baseline", "{lipschitz_json}"), 2, "command 'lipschitz'", out="--junit"),
    Case("gate-missing-config", "gate: config file does not exist", ("gate", "{certify_json}", "--config", "{missing}.yaml"), 2, "does not exist", out="--junit"),
    Case("gate-config-unknown-key", "gate: config with an unknown gate", ("gate", "{certify_json}", "--config", "{gates_unknown}"), 2, "unknown key", out="--junit"),
    Case("gate-config-wrong-type", "gate: a threshold that is not a number", ("gate", "{certify_json}", "--config", "{gates_type}"), 2, "must be a number", out="--junit"),
    Case("gate-config-percent", "gate: an accuracy threshold of 75 (a percentage)", ("gate", "{certify_json}", "--config", "{gates_percent}"), 2, "from 0 to 1", out="--junit"),
    Case("gate-results-accuracy-out-of-range", "gate: results with clean_accuracy 7.5", ("gate", "{acc_7_5_json}", "--config", "{gates}"), 2, "clean_accuracy must be a number from 0 to 1", out="--junit"),
    Case("gate-results-string-number", "gate: results with a string where a number belongs", ("gate", "{acc_string_json}", "--config", "{gates}"), 2, "must be a number", out="--junit"),
    Case("gate-output-is-results", "gate: --junit naming the results file", ("gate", "{certify_json}", "--config", "{gates}", "--junit", "{certify_json}"), 2, "is results file", out="--summary-md"),
]
REPORT_CASES: list[Case] = [
    Case("report-missing", "report: results file does not exist", ("report", "{missing}.json"), 2, "does not exist", out="--md"),
    Case("report-not-json", "report: results file that is not JSON", ("report", "{text}"), 2, "not valid JSON", out="--md"),
    Case("report-not-lipcert", "report: a JSON object that is not lipcert's", ("report", "{foreign_json}"), 2, "'command' key", out="--md"),
    Case("report-json-list", "report: a JSON list instead of an object", ("report", "{list_json}"), 2, "'command' key", out="--md"),
    Case("report-other-schema", "report: results of another schema version", ("report", "{future_json}"), 2, "schema_version 99", out="--md"),
    Case("report-results-string-number", "report: results with strings where numbers belong", ("report", "{acc_string_json}"), 2, "must be a number", out="--md"),
    Case("report-pdf-full-disk", "report: a PDF written to a full disk", ("report", "{certify_json}", "--pdf", "{result}"), 3, "no space left on the device", out="--pdf", full_disk=True),
]
LIPSCHITZ_CASES: list[Case] = [
    Case("lipschitz-missing-model", "lipschitz: model file does not exist", ("lipschitz", "{missing}"), 2, "does not exist"),
    Case("lipschitz-missing-data", "lipschitz: data path that does not exist", ("lipschitz", "{good}", "--data", "{missing}"), 2, "neither a file"),
    Case("lipschitz-bad-norm", "lipschitz: an unknown norm", ("lipschitz", "{good}", "--norm", "l1"), 2, "l1"),
    Case("lipschitz-limit-zero", "lipschitz: --limit 0", ("lipschitz", "{good}", "--data", "{data}", "--limit", "0"), 2, "--limit"),
    Case("lipschitz-nan-inputs", "lipschitz: inputs with NaN", ("lipschitz", "{good}", "--data", "{data_nan}"), 2, "NaN"),
    Case("cache-key-too-short", "LIPCERT_CACHE_KEY shorter than 16 characters", (*GOOD, "--eps", "1"), 2, "LIPCERT_CACHE_KEY must be at least 16",
         env=(("LIPCERT_CACHE_DIR", "{tmp}/cache"), ("LIPCERT_CACHE_KEY", "short"))),
    Case("conv-exact-flops-bad", "LIPCERT_CONV_EXACT_FLOPS that is not a number ≥ 0", (*GOOD, "--eps", "1"), 2,
         "LIPCERT_CONV_EXACT_FLOPS must be a number", env=(("LIPCERT_CONV_EXACT_FLOPS", "lots"),)),
    Case("data-lipschitz-missing", "data-lipschitz: data path that does not exist", ("data-lipschitz", "{missing}"), 2, "neither a file"),
    Case("data-lipschitz-empty", "data-lipschitz: a dataset with no examples", ("data-lipschitz", "{data_empty}"), 2, "is empty"),
    Case("data-lipschitz-one-class", "data-lipschitz: all labels equal (no pair to compare)", ("data-lipschitz", "{data_one_class}"), 2, "different labels"),
    Case("data-lipschitz-limit-zero", "data-lipschitz: --limit 0", ("data-lipschitz", "{data}", "--limit", "0"), 2, "--limit"),
]
V = "verify"
VERIFY_CASES: list[Case] = [
    Case("verify-no-property", "verify: MODEL without PROPERTY", (V, "{good}"), 2, "give MODEL and PROPERTY"),
    Case("verify-missing-property", "verify: property file does not exist", (V, "{good}", "{missing}.vnnlib"), 2, "does not exist"),
    Case("verify-unsupported-construct", "verify: a VNN-LIB construct outside the subset", (V, "{good}", "{vnn_implies}"), 2, "'(=> …)' is not in the supported VNN-LIB subset"),
    Case("verify-nonlinear", "verify: a product of two outputs", (V, "{good}", "{vnn_product}"), 2, "product of two variables"),
    Case("verify-input-count", "verify: a property with another number of inputs than the model", (V, "{good}", "{vnn_two_inputs}"), 2, "declares 2 inputs"),
    Case("verify-timeout-zero", "verify: --timeout 0", (V, "{good}", "{vnn_two_inputs}", "--timeout", "0"), 2, "--timeout"),
    Case("verify-instances-missing", "verify: instances file does not exist", (V, "--instances", "{missing}.csv"), 2, "does not exist"),
    Case("verify-instances-bad-row", "verify: an instances.csv row without three columns", (V, "--instances", "{bad_instances}"), 2, "expected onnx_path,vnnlib_path,timeout"),
    Case("verify-both-modes", "verify: MODEL PROPERTY and --instances together", (V, "{good}", "{vnn_two_inputs}", "--instances", "{bad_instances}"), 2, "not both"),
]
CASES += ATTACK_CASES + RUN_CASES + GATE_CASES + REPORT_CASES + LIPSCHITZ_CASES + VERIFY_CASES


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
    unclaimed = save_model(Affine(5 * w), d / "unclaimed.pt2", ModelMetadata(input_shape=SHAPE),
                           example_input=torch.zeros(2, *SHAPE))
    f64 = save_model(Affine(w).double(), d / "f64.pt2", ModelMetadata(input_shape=SHAPE),
                     example_input=torch.zeros(2, *SHAPE, dtype=torch.float64))
    extra = other_command_files(d, good)
    extra.update(hostile_files(d, good, extra))
    extra.update(_verify_files(d))
    return {**extra, "unclaimed": str(unclaimed), "f64": str(f64),
        "good": str(good), "truncated": str(truncated), "empty": str(d / "empty.pt"), "text": str(d / "text.txt"),
        "pickle": str(d / "pickle.pt"), "marker": str(d / "PWNED"), "sd": str(d / "sd.pt"),
        "nan_sd": str(d / "nan_sd.pt"), "bad_yaml": str(d / "bad.yaml"), "unknown_yaml": str(d / "unknown.yaml"),
        "type_yaml": str(d / "type.yaml"), "missing": str(d / "missing"), "dir": str(d / "dir"),
        "data": str(d / "data.npz"), "data_many_labels": str(d / "data_many_labels.npz"),
        "data_nan": str(d / "data_nan.npz"), "data_big": str(d / "data_big.npz"), "data_neg": str(d / "data_neg.npz"),
        "data_empty": str(d / "data_empty.npz"), "data_noxy": str(d / "data_noxy.npz"),
        "other_results": str(d / "other.json"), "out": str(d / "out.json"),
    }


def _verify_files(d: Path) -> dict[str, str]:
    """VNN-LIB properties (text, so no onnx needed) for the verify cases; ``good`` takes 4 inputs, gives 3."""
    head = "".join(f"(declare-const X_{i} Real)\n(assert (<= X_{i} 1))\n(assert (>= X_{i} 0))\n" for i in range(4))
    head += "".join(f"(declare-const Y_{j} Real)\n" for j in range(3))
    texts = {"vnn_implies": head + "(assert (=> (>= Y_0 0) (>= Y_1 0)))\n",
             "vnn_product": head + "(assert (>= (* Y_0 Y_1) 0))\n",
             "vnn_two_inputs": "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
                               "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= X_1 1))\n(assert (>= X_1 0))\n"
                               "(assert (>= Y_0 0))\n"}
    out = {}
    for name, text in texts.items():
        (d / f"{name}.vnnlib").write_text(text)
        out[name] = str(d / f"{name}.vnnlib")
    (d / "bad_instances.csv").write_text("net.onnx,prop.vnnlib\n")
    out["bad_instances"] = str(d / "bad_instances.csv")
    return out


def other_command_files(d: Path, good: Path) -> dict[str, str]:
    """Fixture files for the attack, run, gate, report and lipschitz cases."""
    files = {
        "foreign.json": '{"accuracy": 0.9}',
        "list.json": "[1, 2]",
        "future.json": '{"command": "certify", "schema_version": 99, "model": {}, "data": {}}',
        "lipschitz.json": '{"command": "lipschitz", "schema_version": 1}',
        "gates.yaml": "min_clean_accuracy: 0.5\n",
        "gates_unknown.yaml": "min_accuracy: 0.5\n",
        "gates_type.yaml": "min_clean_accuracy: high\n",
        "suite_syntax.yaml": f"model: {good}\nnorm: l2\neps: [0.1\n",
        "suite_unknown.yaml": f"model: {good}\nnorm: l2\nepsilon: [0.1]\n",
        "suite_type.yaml": f"model: {good}\nnorm: l2\neps: {{a: 1}}\n",
        "suite_gate.yaml": f"model: {good}\nnorm: l2\ngates:\n  min_accuracy: 0.5\n",
        "suite_no_model.yaml": "norm: l2\neps: [0.1]\n",
        "suite_bad_norm.yaml": f"model: {good}\nnorm: l3\n",
        "suite_missing_model.yaml": f"model: {d / 'nowhere.pt2'}\nnorm: l2\ndata: {d / 'data.npz'}\n",
        "empty.yaml": "",
    }
    for name, text in files.items():
        (d / name).write_text(text)
    np.savez(d / "data_one_class.npz", x=np.random.default_rng(0).random((4, 1, 2, 2), dtype=np.float32),
             y=np.zeros(4, dtype=np.int64))
    certify_json = d / "certify.json"
    res = CliRunner().invoke(main, ["certify", str(good), "--data", str(d / "data.npz"), "--norm", "l2",
                                    "--eps", "0.1", "--json", str(certify_json), "-q"])
    assert res.exit_code == 0, res.output
    attack_json = d / "attack.json"
    res = CliRunner().invoke(main, ["attack", str(good), "--data", str(d / "data.npz"), "--norm", "l2",
                                    "--eps", "0.5", "--attacks", "pgd", "--steps", "5", "--json", str(attack_json), "-q"])
    assert res.exit_code == 0, res.output
    out = {name.rsplit(".", 1)[0]: str(d / name) for name in files}
    return {**out, "foreign_json": out["foreign"], "list_json": out["list"],
            "future_json": out["future"], "lipschitz_json": out["lipschitz"], "empty_yaml": out["empty"],
            "data_one_class": str(d / "data_one_class.npz"), "certify_json": str(certify_json),
            "attack_json": str(attack_json)}


class NonFinite(nn.Module):
    """Logits log(x - 2) (NaN on [0, 1]) or log(0·x) (−inf)."""

    def __init__(self, kind: str):
        super().__init__()
        self.shift = 2.0 if kind == "nan" else 0.0
        self.scale = 1.0 if kind == "nan" else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)[:, :3]
        return torch.log(self.scale * z - self.shift)


def _crc_broken(src: Path, dst: Path, member_suffix: str) -> Path:
    import zipfile

    raw = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(member_suffix))
    name_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    raw[info.header_offset + 30 + name_len + extra_len] ^= 0xFF
    dst.write_bytes(bytes(raw))
    return dst


def hostile_files(d: Path, good: Path, extra: dict[str, str]) -> dict[str, str]:
    """Fixture files for the issue-18 cases: hostile checkpoints, broken data, forged partials."""
    import io
    import json
    import zipfile

    from safetensors.torch import save_file

    out: dict[str, str] = {}
    meta = ModelMetadata(input_shape=SHAPE)
    marker = d / "PWNED"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(d / "pt2_pickle.pt2", "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data/sample_inputs/model.pt"):
                buf = io.BytesIO()
                torch.save(((Payload(str(marker)),), {}), buf)
                data = buf.getvalue()
            zout.writestr(info.filename, data)
    out["pt2_pickle"] = str(d / "pt2_pickle.pt2")
    out["pt2_crc"] = str(_crc_broken(good, d / "pt2_crc.pt2", "weight_0"))
    torch.save({"lipcert_format": 1, "state_dict": Tiny().state_dict(), "metadata": {},
                "architecture": {"class": "os:system", "kwargs": {"command": f"touch {marker}"}}}, d / "sd_os.pt")
    out["sd_os_system"] = str(d / "sd_os.pt")
    save_file(Tiny().state_dict(), str(d / "st_os.safetensors"), metadata={
        "lipcert_architecture": json.dumps({"class": "os:system", "kwargs": {"command": f"touch {marker}"}})})
    out["st_os_system"] = str(d / "st_os.safetensors")
    save_file(Tiny().state_dict(), str(d / "st_bad.safetensors"), metadata={"lipcert_architecture": "{oops"})
    out["st_bad_json"] = str(d / "st_bad.safetensors")
    w = torch.eye(4)[:3].clone()
    w[1, 1] = float("nan")
    out["nan_pt2"] = str(save_model(Affine(w), d / "nan.pt2", meta, example_input=torch.zeros(2, *SHAPE)))
    for kind in ("nan", "inf"):
        out[f"{kind}_logits"] = str(save_model(NonFinite(kind), d / f"{kind}_logits.pt2", meta,
                                               example_input=torch.zeros(2, *SHAPE)))
    x = np.zeros((4, 1, 2, 2), dtype=np.float32)
    np.savez(d / "ok.npz", x=x, y=np.array([0, 1, 2, 0]))
    raw = (d / "ok.npz").read_bytes()
    (d / "npz_truncated.npz").write_bytes(raw[: len(raw) // 2])
    out["npz_truncated"] = str(d / "npz_truncated.npz")
    out["npz_crc"] = str(_crc_broken(d / "ok.npz", d / "npz_crc.npz", "x.npy"))
    np.savez(d / "npz_strings.npz", x=np.array(["a", "b", "c", "d"]), y=np.array([0, 1, 2, 0]))
    out["npz_strings"] = str(d / "npz_strings.npz")
    np.savez(d / "npz_huge.npz", x=x, y=np.array([0, 1, 2, 1e20]))
    out["npz_huge_labels"] = str(d / "npz_huge.npz")
    torch.save({"images": torch.zeros(4, 1, 2, 2)}, d / "pt_dict.pt")
    torch.save("just a string", d / "pt_string.pt")
    out.update(pt_dict=str(d / "pt_dict.pt"), pt_string=str(d / "pt_string.pt"))
    (d / "idx").mkdir()
    (d / "idx" / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00")
    (d / "idx" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x00")
    out["idx_bad"] = str(d / "idx")
    (d / "png" / "cat").mkdir(parents=True)
    (d / "png" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    out["png_bad"] = str(d / "png")
    out.update(_partials(d, good))
    out.update(_bad_suites(d, good))
    return out


def _partials(d: Path, good: Path) -> dict[str, str]:
    import json

    common = ["certify", str(good), "--data", str(d / "data.npz"), "--norm", "l2", "--eps", "0.1", "-q"]
    res = CliRunner().invoke(main, [*common, "--certificate", "l2-multi", "--assume-lipschitz",
                                    "--json", str(d / "assumed.json")])
    assert res.exit_code == 0, res.stderr
    res = CliRunner().invoke(main, [*common, "--json", str(d / "plain.json")])
    assert res.exit_code == 0, res.stderr
    plain = json.loads((d / "plain.json").read_text())
    uneven = json.loads(json.dumps(plain))
    uneven["per_example"]["radius"].pop()
    forged = json.loads(json.dumps(plain))
    forged["per_example"]["radius"][0] = 99.0
    out = {"assumed_json": str(d / "assumed.json")}
    for name, value in (("uneven_json", uneven), ("forged_radius_json", forged)):
        (d / f"{name}.json").write_text(json.dumps(value))
        out[name] = str(d / f"{name}.json")
    acc = json.loads(json.dumps(plain))
    acc["clean_accuracy"] = 7.5
    (d / "acc_7_5.json").write_text(json.dumps(acc))
    acc["clean_accuracy"] = "high"
    acc["results"][0]["certified_accuracy"] = "most"
    acc["median_radius"] = "big"
    (d / "acc_string.json").write_text(json.dumps(acc))
    out.update(acc_7_5_json=str(d / "acc_7_5.json"), acc_string_json=str(d / "acc_string.json"))
    return out


def _bad_suites(d: Path, good: Path) -> dict[str, str]:
    head = f"model: {good}\nnorm: l2\ndata: {d / 'data.npz'}\n"
    levels = "abcdefghi"
    laughs = f"model: {good}\nnorm: l2\neps:\n  a: &a [" + ", ".join(["lol"] * 9) + "]\n" + "".join(
        f"  {c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]\n" for p, c in zip(levels, levels[1:]))
    texts = {
        "suite_batch_zero": head + "batch_size: 0\n",
        "suite_batch_zero_ok": head + "attacks: false\nlipschitz: false\n",
        "suite_batch_negative": head + "batch_size: -4\n",
        "suite_delegate": head + "analysis: {delegate_accuracy: 5}\n",
        "suite_seed": head + "seed: 99999999999999999999999\n",
        "suite_laughs": laughs,  # 9**9 strings once expanded: a repr would never finish
        "suite_gate_percent": head + "gates: {min_clean_accuracy: 75}\n",
        "gates_percent": "min_clean_accuracy: 75\n",
    }
    out = {}
    for name, text in texts.items():
        (d / f"{name}.yaml").write_text(text)
        out[name] = str(d / f"{name}.yaml")
    return out


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_catalogue(case: Case, files, tmp_path, monkeypatch):
    if case.id == "cuda-missing" and torch.cuda.is_available():
        pytest.skip("CUDA is available")
    if case.full_disk:
        import errno

        from matplotlib.backends.backend_pdf import PdfPages

        def full(*_a, **_k):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(PdfPages, "savefig", full)
    for name, value in case.env:
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    out = tmp_path / "result.json"
    argv = [a.format(**files, result=str(out)) for a in case.argv]
    if case.out not in argv:
        argv += [case.out, str(out)]
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
