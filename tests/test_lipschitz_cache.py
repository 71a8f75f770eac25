"""The on-disk cache of per-layer bounds: a warm run reuses what this installation proved and signed,
and everything else (a changed weight, setting or code, a forged, altered, foreign or unsigned entry, a
key file others can read) is a miss that proves the layer again."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from certify.errors import BadInputError
from certify.lipschitz import analyse, analysis, cache
from certify.lipschitz import operator_norms as on
from tests.helpers_lipschitz import loaded


def _cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 3))


def _fresh(net: nn.Module):  # type: ignore[no-untyped-def]
    analysis._CACHE.clear()  # the in-process cache would answer first
    return analyse(loaded(net, (1, 8, 8)), norm="l2")


def _convs(rep):  # type: ignore[no-untyped-def]
    return [lb for lb in rep.layers if lb.op == "conv2d"]


@pytest.fixture
def on_disk(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """The cache on, in tmp_path/cache, its key file in tmp_path/config; counts the proofs run."""
    monkeypatch.setenv("LIPCERT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("LIPCERT_CACHE_KEY", raising=False)
    proofs: list[object] = []
    real = on.conv_l2

    def counting(spec, *args, **kwargs):  # type: ignore[no-untyped-def]
        proofs.append(spec)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(on, "conv_l2", counting)
    return tmp_path, proofs


def _entries(tmp_path):  # type: ignore[no-untyped-def]
    return sorted((tmp_path / "cache").rglob("*.json"))


def test_a_warm_run_reuses_the_signed_bounds_without_proving_again(on_disk) -> None:  # type: ignore[no-untyped-def]
    tmp_path, proofs = on_disk
    net = _cnn(0)
    first = _fresh(net)
    assert not any(lb.reused for lb in _convs(first)) and len(proofs) == 2
    assert len(_entries(tmp_path)) == 2
    second = _fresh(net)
    assert all(lb.reused for lb in _convs(second)) and len(proofs) == 2  # nothing proven again
    for a, b in zip(_convs(first), _convs(second)):
        assert (b.bound, b.estimate, b.method) == (a.bound, a.estimate, a.method)  # bit for bit
    assert second.global_bound == first.global_bound
    key = cache.key_file()
    assert key.is_file() and (sys.platform == "win32" or stat.S_IMODE(key.stat().st_mode) == 0o600)
    with torch.no_grad():
        net[2].weight[0, 0, 0, 0] += 1e-3
    third = _fresh(net)
    assert [lb.reused for lb in _convs(third)] == [True, False] and len(proofs) == 3


def _resign(path, secret: bytes, **changes) -> None:  # type: ignore[no-untyped-def]
    raw = json.loads(path.read_text())
    raw.pop("mac")
    raw.update(changes)
    mac = hmac.new(secret, json.dumps(raw, sort_keys=True).encode(), hashlib.sha256).hexdigest()
    path.write_text(json.dumps(dict(raw, mac=mac)))


def test_forged_altered_foreign_and_unsigned_entries_are_misses(on_disk) -> None:  # type: ignore[no-untyped-def]
    """Every kind of entry this installation did not sign is proven again, to the honest bound."""
    tmp_path, proofs = on_disk
    net = _cnn(1)
    honest = [(lb.bound, lb.method) for lb in _convs(_fresh(net))]
    files = _entries(tmp_path)
    assert len(files) == 2
    originals = [f.read_text() for f in files]
    secret = cache.secret()
    assert secret is not None

    def forged(edit) -> None:  # type: ignore[no-untyped-def]
        for f, text in zip(files, originals):
            f.write_text(text)
            edit(f)
        n = len(proofs)
        again = _convs(_fresh(net))
        assert not any(lb.reused for lb in again), edit
        assert [(lb.bound, lb.method) for lb in again] == honest
        assert len(proofs) == n + 2

    def lower_bound_keep_mac(f) -> None:  # type: ignore[no-untyped-def]
        f.write_text(json.dumps(dict(json.loads(f.read_text()), bound=1e-12)))

    def drop_mac(f) -> None:  # type: ignore[no-untyped-def]
        raw = json.loads(f.read_text())
        raw.pop("mac")
        f.write_text(json.dumps(dict(raw, bound=1e-12)))

    forged(lower_bound_keep_mac)
    forged(drop_mac)
    forged(lambda f: _resign(f, b"another installation's key!", bound=1e-12))  # a foreign signature
    forged(lambda f: _resign(f, secret, version=cache.VERSION - 1))  # an old format, even signed
    forged(lambda f: f.write_text("{not json"))
    forged(lambda f: f.write_text(json.dumps({"bound": "1", "estimate": 2.0})))
    forged(lambda f: f.write_text(originals[1 - files.index(f)]))  # each layer's signed entry under the other's key
    forged(lambda f: _resign(f, secret, bound=float("nan")))
    forged(lambda f: _resign(f, secret, padding=" " * cache.MAX_ENTRY_BYTES))  # signed, but too large to read
    # each miss wrote the honest entry back, signed: reused again
    assert all(lb.reused for lb in _convs(_fresh(net)))


def test_a_changed_setting_or_code_misses(on_disk, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    tmp_path, proofs = on_disk
    net = _cnn(2)
    _fresh(net)
    monkeypatch.setenv("LIPCERT_CONV_EXACT_FLOPS", "0")  # another certificate setting
    assert not any(lb.reused for lb in _convs(_fresh(net)))
    monkeypatch.delenv("LIPCERT_CONV_EXACT_FLOPS")
    assert all(lb.reused for lb in _convs(_fresh(net)))
    monkeypatch.setattr(cache, "fingerprint", lambda: "0" * 64)  # an edited or upgraded lipcert
    assert not any(lb.reused for lb in _convs(_fresh(net)))


def test_the_fingerprint_covers_the_analysis_code() -> None:
    cache.fingerprint.cache_clear()
    a = cache.fingerprint()
    assert a == cache.fingerprint() and len(a) == 64
    root = os.path.dirname(cache.__file__)
    assert os.path.isfile(os.path.join(root, "operator_norms", "conv_exact.py"))


def test_a_key_file_others_can_read_turns_the_cache_off(on_disk) -> None:  # type: ignore[no-untyped-def]
    if sys.platform == "win32":
        pytest.skip("POSIX permissions")
    tmp_path, proofs = on_disk
    net = _cnn(3)
    _fresh(net)
    cache.key_file().chmod(0o644)
    assert cache.secret() is None
    again = _fresh(net)
    assert not any(lb.reused for lb in _convs(again)) and len(proofs) == 4
    cache.key_file().chmod(0o600)
    assert all(lb.reused for lb in _convs(_fresh(net)))


def test_a_shared_key_from_the_environment(on_disk, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    tmp_path, proofs = on_disk
    net = _cnn(4)
    monkeypatch.setenv("LIPCERT_CACHE_KEY", "a-ci-secret-of-32-characters-xx")
    _fresh(net)
    assert not cache.key_file().exists()  # the environment's key: no key file
    assert all(lb.reused for lb in _convs(_fresh(net)))
    monkeypatch.setenv("LIPCERT_CACHE_KEY", "another-ci-secret-of-32-chars-yy")
    assert not any(lb.reused for lb in _convs(_fresh(net)))
    monkeypatch.setenv("LIPCERT_CACHE_KEY", "short")
    with pytest.raises(BadInputError, match="LIPCERT_CACHE_KEY must be at least 16 characters"):
        cache.secret()


def test_no_key_or_cache_off_means_no_reads_and_no_writes(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("LIPCERT_CACHE_KEY", raising=False)
    w = torch.randn(2, 2, 3, 3)
    k = cache.tensor_key("m", w, {"stride": [1, 1]})
    assert k != cache.tensor_key("m", w, {"stride": [2, 1]})
    assert k != cache.tensor_key("m2", w, {"stride": [1, 1]})
    w2 = w.clone()
    w2.view(-1)[5] = torch.nextafter(w2.view(-1)[5], torch.tensor(float("inf")))
    assert k != cache.tensor_key("m", w2, {"stride": [1, 1]})
    monkeypatch.setenv("LIPCERT_CACHE_DIR", "off")
    assert cache.cache_dir() is None
    cache.store(k, {"bound": 1.0})
    assert cache.load(k, ("bound",)) is None
    monkeypatch.setenv("LIPCERT_CACHE_DIR", str(tmp_path / "cache"))
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(blocked))  # the key file cannot be created
    assert cache.secret() is None
    cache.store(k, {"bound": 1.0})
    assert not list((tmp_path / "cache").rglob("*.json")) and cache.load(k, ("bound",)) is None
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    cache.store(k, {"bound": 1.0, "method": "x"})
    assert cache.load(k, ("bound",), ("method",)) == {"bound": 1.0, "method": "x"}
    assert cache.load(k, ("bound", "estimate")) is None


def test_the_cli_reports_reused_layers_and_a_bad_key(on_disk, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from certify.cli import main
    from tests.helpers_lipschitz import npz_data, saved, small_cnn

    tmp_path, _ = on_disk
    saved(small_cnn(), (1, 8, 8), tmp_path / "cnn.pt2")
    data = npz_data(tmp_path / "d.npz", (1, 8, 8))
    runs = []
    for _ in range(2):
        analysis._CACHE.clear()
        res = CliRunner().invoke(main, ["lipschitz", str(tmp_path / "cnn.pt2"), "--data", data, "--json", "-"])
        assert res.exit_code == 0, res.stderr
        runs.append([lb for lb in json.loads(res.stdout)["layers"] if lb["op"] == "conv2d"])
    assert runs[0] and not any(lb["reused"] for lb in runs[0]) and all(lb["reused"] for lb in runs[1])
    assert [lb["bound"] for lb in runs[0]] == [lb["bound"] for lb in runs[1]]
    analysis._CACHE.clear()
    monkeypatch.setenv("LIPCERT_CACHE_KEY", "short")
    res = CliRunner().invoke(main, ["lipschitz", str(tmp_path / "cnn.pt2"), "--data", data])
    assert res.exit_code == 2 and res.stderr.startswith("Error: LIPCERT_CACHE_KEY must be at least 16 characters")
    assert "Traceback" not in res.stderr
    monkeypatch.delenv("LIPCERT_CACHE_KEY")
    monkeypatch.setenv("LIPCERT_CONV_EXACT_FLOPS", "lots")
    res = CliRunner().invoke(main, ["lipschitz", str(tmp_path / "cnn.pt2"), "--data", data])
    assert res.exit_code == 2 and res.stderr.startswith("Error: LIPCERT_CONV_EXACT_FLOPS must be a number")


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                     max_leaves=6)


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(["bound", "estimate", "method", "key", "version", "mac", "extra"]),
       value=_JSON, drop=st.booleans())
def test_any_edit_of_a_signed_entry_is_a_miss(field: str, value, drop: bool) -> None:  # type: ignore[no-untyped-def]
    """Fuzz: change, add or drop any one field of a signed entry: load() accepts it only when the content
    it signed is unchanged."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        old = {k: os.environ.get(k) for k in ("LIPCERT_CACHE_DIR", "XDG_CONFIG_HOME", "LIPCERT_CACHE_KEY")}
        os.environ.update(LIPCERT_CACHE_DIR=f"{tmp}/cache", XDG_CONFIG_HOME=f"{tmp}/config")
        os.environ.pop("LIPCERT_CACHE_KEY", None)
        try:
            key = cache.tensor_key("conv-l2", torch.ones(2, 2), {"stride": [1, 1]})
            honest = {"bound": 1.5, "estimate": 1.25, "method": "fourier"}
            cache.store(key, honest)
            path = next(Path(tmp, "cache").rglob("*.json"))
            raw = json.loads(path.read_text())
            before = dict(raw)
            if drop:
                raw.pop(field, None)
            else:
                raw[field] = value
            path.write_text(json.dumps(raw))
            got = cache.load(key, ("bound", "estimate"), ("method",))
            if raw == before:
                assert got == honest
            else:
                assert got is None, (field, value, drop)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def test_concurrent_first_runs_agree_on_one_key(tmp_path) -> None:
    """Several processes creating the key file at once (torchrun ranks on a fresh machine) all end up with
    the same complete key, so each can read what the others signed."""
    import subprocess

    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"))
    env.pop("LIPCERT_CACHE_KEY", None)
    code = "from certify.lipschitz import cache; print(cache.secret().decode())"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    keys = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(keys) == 1 and len(keys.pop()) == 64
    assert [f.name for f in (tmp_path / "config" / "lipcert").iterdir()] == ["cache.key"]  # no temporaries left
