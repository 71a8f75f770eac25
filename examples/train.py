"""Train a lipcert model family from a YAML config and save a lipcert checkpoint.

    python examples/train.py examples/configs/fmnist_linf_dist_cpu.yaml
    python examples/train.py CONFIG --resume           # continue from CONFIG's .resume.pt
    python examples/train.py CONFIG --set epochs=2 --set output=/tmp/m.pt2

The checkpoint is a torch.export program with lipcert metadata (input shape,
bounds, dataset, class names and the family's declared Lipschitz property),
so ``lipcert certify OUTPUT --eps ...`` works on it directly.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from certify.checkpoints import save_model
from certify.data import load_dataset
from certify.device import resolve_device
from certify.io import load_yaml_file
from certify.zoo.training import EpochResult, TrainConfig, build_state, load_resume, metadata_for, save_resume, train

console = Console(stderr=True)


def load_config(path: str, overrides: tuple[str, ...]) -> TrainConfig:
    raw = load_yaml_file(path) or {}
    for item in overrides:
        key, _, value = item.partition("=")
        raw[key] = yaml.safe_load(value)
    return TrainConfig.from_dict(raw, where=path)


def load_data(cfg: TrainConfig):  # type: ignore[no-untyped-def]
    train_data = load_dataset(cfg.dataset, split="train", data_root=cfg.data_root, limit=cfg.train_limit)
    eval_name = cfg.eval_dataset or cfg.dataset
    eval_root = cfg.eval_data_root if cfg.eval_dataset else cfg.data_root
    eval_data = load_dataset(eval_name, split="test", data_root=eval_root, limit=cfg.eval_limit)
    return train_data, eval_data


def epoch_line(r: EpochResult) -> str:
    p = f"  p={r.p:.1f}" if r.p is not None else ""
    return (f"epoch {r.epoch}/{r.epochs}  loss={r.loss:.4f}  train acc={100 * r.train_accuracy:.2f}%  "
            f"test acc={100 * r.eval_accuracy:.2f}%  lr={r.lr:.2e}{p}  ({r.seconds:.0f}s)")


@click.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--resume", is_flag=True, help="Continue from OUTPUT.resume.pt if it exists.")
@click.option("--set", "overrides", multiple=True, help="Override a config key: --set epochs=3.")
@click.option("--device", default="auto", show_default=True)
@click.option("--max-steps", type=int, default=None, help="Stop each epoch after N steps (smoke tests).")
def main(config: str, resume: bool, overrides: tuple[str, ...], device: str, max_steps: int | None) -> None:
    """Train the model described by CONFIG (see examples/README.md)."""
    cfg = load_config(config, overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = resolve_device(device)
    train_data, eval_data = load_data(cfg)
    state = build_state(cfg, dev)
    resume_path = Path(cfg.output).with_suffix(".resume.pt")
    if resume and resume_path.exists():
        load_resume(state, resume_path)
        console.print(f"resumed from {resume_path} after epoch {state.epoch}")
    console.print(f"[bold]{cfg.family}[/] {cfg.arch} {dict(cfg.arch_kwargs)} on {train_data.source} "
                  f"(n={len(train_data)}), {sum(p.numel() for p in state.model.parameters())} parameters, {dev}")
    start = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"epoch {state.epoch + 1}", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=f"epoch {state.epoch + 1}/{cfg.epochs}")

        def on_epoch(r: EpochResult) -> None:
            bar.console.print(epoch_line(r))
            save_resume(state, resume_path)

        train(state, train_data, eval_data, device=dev, progress=progress, on_epoch=on_epoch, max_steps=max_steps)
    export(state, cfg, train_data)
    console.print(f"saved {cfg.output} ({Path(cfg.output).stat().st_size / 1e6:.2f} MB) "
                  f"after {time.perf_counter() - start:.0f}s of training")


def export(state, cfg: TrainConfig, train_data) -> None:  # type: ignore[no-untyped-def]
    model = state.model.to("cpu").eval()
    example = train_data.as_float(train_data.x[:2])
    meta = metadata_for(cfg, train_data.class_names, cfg.eval_dataset or train_data.source)
    Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
    save_model(model, cfg.output, meta, format="torch.export", example_input=example)


if __name__ == "__main__":
    sys.exit(main())
