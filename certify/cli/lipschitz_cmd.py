"""``lipcert lipschitz`` and ``lipcert data-lipschitz``."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..defaults import (
    DEFAULT_SPLIT,
)
from ..threat import NORMS
from .app import main
from .options import (
    load_data_from_options,
    load_model_from_options,
    model_options,
    run_device_for,
    run_options,
)
from .output import (
    check_outputs,
    check_positive,
    delayed_progress_bar,
    emit_json,
    model_inputs,
    progress_bar,
    rank_outputs,
    show,
)

# --------------------------------------------------------------------------- lipschitz


@main.command()
@model_options
@click.option("--norm", type=click.Choice(NORMS), default="l2", show_default=True,
              help="Norm of the bounds (L2→L2 or ℓ∞→ℓ∞).")
@click.option("--data", "data_source", default=None,
              help="Data for the empirical estimates (same names as certify); omit for bounds only.")
@click.option("--data-root", default=None, type=click.Path(), help="Root directory for named datasets.")
@click.option("--split", type=click.Choice(["train", "test"]), default=DEFAULT_SPLIT, show_default=True)
@click.option("--limit", type=int, default=1000, show_default=True, help="Points for the empirical estimates.")
@run_options
def lipschitz(model: str, arch: str | None, arch_kwargs: str | None, trust_checkpoint: bool, norm: str,
              data_source: str | None, data_root: str | None, split: str, limit: int, device: str, seed: int,
              json_path: str | None, quiet: bool) -> None:
    """Guaranteed Lipschitz bounds per layer, and empirical estimates: lipcert lipschitz model.pt2 --data demo"""
    from ..device import seed_everything
    from ..lipschitz import analyse
    from ..lipschitz.estimates import empirical_estimates
    from ..reporting.tables import empirical_table, lipschitz_table
    from ..results import lipschitz_json

    # torchrun: every rank analyses the weights (deterministic, cheap), the estimates are sharded, rank 0 writes
    quiet, json_path = rank_outputs(quiet, json_path)
    check_positive("--limit", limit)
    check_outputs({"--json": json_path}, model_inputs(model, arch, data_source))
    dev = run_device_for(device)
    seed_everything(seed)
    loaded = load_model_from_options(model, arch, arch_kwargs, trust_checkpoint, dev)
    data = load_dataset_for_lipschitz(loaded, data_source, data_root, split, limit)
    with delayed_progress_bar("Lipschitz analysis (nodes)", quiet) as progress:
        report = analyse(loaded, norm=norm, input_shape=data.input_shape if data is not None else None,
                         progress=progress)
    empirical = None
    if data is not None:
        with progress_bar("estimates", len(data), quiet) as progress:
            empirical = empirical_estimates(loaded.module, data, bounds=loaded.metadata.bounds, device=dev,
                                            seed=seed, progress=progress)
    emit_json(lipschitz_json(report, empirical, sys.argv[1:], loaded.info), json_path)
    show([lipschitz_table(report), empirical_table(empirical) if empirical is not None else None],
         quiet, json_path == "-")


def load_dataset_for_lipschitz(loaded: Any, data_source: str | None, data_root: str | None, split: str,
                               limit: int) -> Any:
    if data_source is None:
        return None
    return load_data_from_options(loaded, data_source, data_root, split, limit)


@main.command("data-lipschitz")
@click.argument("data_source", metavar="DATA")
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True)
@click.option("--data-root", default=None, type=click.Path(), help="Root directory for named datasets.")
@click.option("--limit", type=int, default=None, help="Use only the first N examples.")
@run_options
def data_lipschitz_cmd(data_source: str, split: str, data_root: str | None, limit: int | None, device: str,
                       seed: int, json_path: str | None, quiet: bool) -> None:
    """Lip₂,∞ of a dataset ([WCAT] App. C): lipcert data-lipschitz fashion-mnist"""
    from ..data import load_dataset
    from ..lipschitz.estimates import data_lipschitz
    from ..reporting.tables import data_lipschitz_table
    from ..results import data_lipschitz_json

    quiet, json_path = rank_outputs(quiet, json_path)  # torchrun: row blocks shared out, rank 0 writes
    check_outputs({"--json": json_path}, {"the data": data_source})
    dev = run_device_for(device)
    data = load_dataset(data_source, split=split, data_root=data_root, limit=limit)
    with progress_bar("data-lipschitz", len(data), quiet) as progress:
        result = data_lipschitz(data, device=dev, progress=progress)
    info = {"source": data.source, "split": data.split, "n": len(data)}
    emit_json(data_lipschitz_json(result, info, sys.argv[1:]), json_path)
    show([data_lipschitz_table(result, data.source)], quiet, json_path == "-")
