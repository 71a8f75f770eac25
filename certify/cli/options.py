"""Options shared by the commands, and loading the model and the data they name."""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import click

from ..threat import NORMS
from ..defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_SEED,
    DEFAULT_SPLIT,
    SEED_MAX,
)

F = Callable[..., Any]


# --------------------------------------------------------------------------- shared options


def option_group(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Bundle click options into one decorator (applied in the order listed)."""

    def apply(f: F) -> F:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


def set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta["lipcert.debug"] = True
    return value


def _set_trust_modules(ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    ctx.meta["lipcert.trust_modules"] = tuple(value)
    return value


def _set_input_shape(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        ctx.meta["lipcert.input_shape"] = parse_shape(value)
    return value


def parse_shape(text: str) -> tuple[int, ...]:
    """``--input-shape 1,28,28`` (one example, without the batch dimension)."""
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise click.BadParameter(f"expected positive integers like 1,28,28; got {text!r}", param_hint="--input-shape")
    return dims


#: MODEL argument plus how to load it.
model_options = option_group(
    click.argument("model", type=click.Path(dir_okay=True)),
    click.option("--arch", help="Architecture for a state_dict or safetensors checkpoint: "
                                "module:Class or a YAML model spec."),
    click.option("--arch-kwargs", default=None, help="JSON keyword arguments for --arch module:Class."),
    click.option("--trust-checkpoint", is_flag=True,
                 help="Allow arbitrary pickles, pickled or non-aten torch.export members and any architecture "
                      "the file names (they can run code; only for files you trust). See docs/security.md."),
    click.option("--trust-module", "trust_modules", multiple=True, expose_value=False, callback=_set_trust_modules,
                 help="A Python module whose nn.Module classes a checkpoint may name as its architecture "
                      "(besides certify.models and certify.layers); repeatable."),
    click.option("--input-shape", "input_shape", default=None, expose_value=False, callback=_set_input_shape,
                 help="Shape of one example, e.g. 1,28,28. For an ONNX model: how examples map onto its declared "
                      "input (default: reshaped to it when the element counts agree)."),
)


#: --norm and a required --eps list (certify, attack).
threat_options = option_group(
    click.option("--norm", type=click.Choice(NORMS), required=True, help="Threat-model norm of ε."),
    click.option("--eps", "eps", multiple=True, required=True, help="Radius ε; repeat or give 0.5,1,1.5."),
)


data_options = option_group(
    click.option("--data", "data_source", default=None,
                 help="idx directory, fashion-mnist, mnist, cifar10, mnist5k, demo, .npz, .pt or image "
                      "folder. Default: the dataset named in the model's metadata."),
    click.option("--data-root", default=None, type=click.Path(), help="Root directory for named datasets."),
    click.option("--split", type=click.Choice(["train", "test"]), default=DEFAULT_SPLIT, show_default=True),
    click.option("--limit", type=int, default=None, help="Use only the first N examples."),
    click.option("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, show_default=True),
)


run_options = option_group(
    click.option("--device", default=DEFAULT_DEVICE, show_default=True, help="auto, cpu or cuda."),
    click.option("--seed", type=click.IntRange(0, SEED_MAX), default=DEFAULT_SEED, show_default=True),
    click.option("--json", "json_path", default=None, help="Write JSON results here ('-' for stdout)."),
    click.option("--quiet", "-q", is_flag=True, help="No table or progress bar."),
    click.option("--debug", is_flag=True, expose_value=False, callback=set_debug, is_eager=True,
                 help="Show tracebacks for errors."),
)


def parse_kwargs_json(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"expected a JSON object, e.g. '{{\"width\": 64}}' ({err.msg})",
                                 param_hint="--arch-kwargs") from None
    if not isinstance(value, dict):
        raise click.BadParameter("expected a JSON object", param_hint="--arch-kwargs")
    return value


def load_model_from_options(model: str, arch: str | None, arch_kwargs: str | None, trust_checkpoint: bool,
                            device: Any) -> Any:
    from ..checkpoints import load_architecture, load_model

    architecture = load_architecture(arch, parse_kwargs_json(arch_kwargs))
    ctx = click.get_current_context(silent=True)
    trusted = ctx.meta.get("lipcert.trust_modules", ()) if ctx is not None else ()
    shape = ctx.meta.get("lipcert.input_shape") if ctx is not None else None
    return load_model(model, arch=architecture, trust_checkpoint=trust_checkpoint, trusted_modules=trusted,
                      device=device, input_shape=shape)


def load_data_from_options(loaded: Any, data_source: str | None, data_root: str | None, split: str,
                           limit: int | None) -> Any:
    from ..data import load_dataset
    from ..errors import BadInputError

    source = data_source or loaded.metadata.dataset
    if source is None:
        raise BadInputError("no --data given and the model's metadata names no dataset; pass --data")
    return load_dataset(source, split=split, data_root=data_root, limit=limit)


# --------------------------------------------------------------------------- values of options


def int_list(name: str, values_: Sequence[str] | str) -> tuple[int, ...]:
    """``--steps 100,1000`` and ``--steps 100 --steps 1000`` alike."""
    text = values_ if isinstance(values_, str) else ",".join(values_)
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected integers like 100,1000; got {text!r}", param_hint=name) from None
    if not values or any(v < 1 for v in values):
        raise click.BadParameter(f"expected positive integers like 100,1000; got {text!r}", param_hint=name)
    return values


def parse_names(values: Sequence[str]) -> tuple[str, ...] | None:
    names = tuple(n.strip() for v in values for n in v.split(",") if n.strip())
    if not names:
        return None
    return () if names == ("none",) else names


def check_lipschitz_constant(loaded: Any, norm: str, certificate: str, lipschitz_constant: float | None) -> None:
    """--lipschitz-constant cannot apply to pairwise certificates: refuse it rather than ignore it."""
    from ..certificates import resolved_certificate

    if lipschitz_constant is not None and resolved_certificate(loaded, norm, certificate) == "auto":
        raise click.UsageError(
            f"--lipschitz-constant {lipschitz_constant:g} cannot apply to --certificate auto on this model: it "
            f"declares no {norm} Lipschitz claim, so auto uses pairwise bounds computed from the weights; "
            "name --certificate l2-multi, l2-single or linf-dist to certify with a given constant")


# --------------------------------------------------------------------------- torchrun


def one_process_only(command: str, why: str) -> None:
    """Refuse to run ``command`` under torchrun (more than one process) with one line saying ``why``."""
    from ..distributed import world_from_env
    from ..errors import BadInputError

    world = world_from_env()
    if world.distributed:
        raise BadInputError(f"lipcert {command} does not run under torchrun (WORLD_SIZE {world.world_size}): "
                            f"{why}; run it as one process, without torchrun")


def run_device_for(device: str) -> Any:
    """The device of this run; under torchrun, this rank's (``cuda`` → ``cuda:LOCAL_RANK``), after
    joining the process group (left when the process exits: commands run in one process share it)."""
    import atexit

    from ..device import resolve_device
    from ..distributed import close_world, init_world, rank_device, world_from_env

    dev = rank_device(resolve_device(device), world_from_env())
    if dev.type == "cuda":
        import torch

        torch.cuda.set_device(dev)
    if init_world(dev).distributed:
        atexit.unregister(close_world)
        atexit.register(close_world)
    return dev


def budget_option(value: str) -> str:
    """``--certificate-budget``, parsed once here (a bad value: one ``Error:`` line, exit 2)."""
    from ..budget import parse_budget
    from ..errors import BadInputError

    try:
        return parse_budget(value).text
    except BadInputError as err:
        raise click.BadParameter(str(err), param_hint="'--certificate-budget'") from None
