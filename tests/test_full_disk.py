"""Writes that fail for lack of space say so (DiskFull), leave the previous file, leave no torn one.

On a real, small tmpfs (mounted here: needs root), filled with a filler file to set the free space.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from core import atomic
from core.atomic import append_jsonl, atomic_torch_save, atomic_write_json, build_folder
from core.errors import DiskFull

MB = 1_000_000
PAGE = 4096


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``tmpfs(size)``: a fresh tmpfs of ``size`` bytes under ``tmp_path``, unmounted after."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root to mount a tmpfs: running as uid {os.geteuid()}")
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        folder = tmp_path / f"fs{len(mounted)}"
        folder.mkdir()
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as err:
            pytest.skip(f"needs root to mount a tmpfs: {err}")
        if done.returncode != 0:
            pytest.skip(f"needs root to mount a tmpfs: {done.stderr.strip() or done.returncode}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path, leave: int) -> Path:
    """Write a filler file in ``folder`` so that about ``leave`` bytes stay free (page-rounded)."""
    filler = folder / "filler"
    want = shutil.disk_usage(folder).free - leave
    assert want >= 0, f"only {shutil.disk_usage(folder).free} bytes free, cannot leave {leave}"
    with open(filler, "ab") as f:
        while want > 0:
            n = f.write(b"\0" * min(want, 1 << 20))
            want -= n
    assert abs(shutil.disk_usage(folder).free - leave) <= PAGE
    return filler


def no_tmp_left(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if p.name.endswith(".tmp")]


def state(nbytes: int, value: float = 1.0) -> dict[str, torch.Tensor]:
    return {"w": torch.full((nbytes // 4,), value), "b": torch.arange(10.0)}


def check_one_line(err: DiskFull, path: Path) -> None:
    text = str(err)
    assert "\n" not in text
    assert text.startswith(f"no space left on device writing {path}: needed ")
    assert " MB" in text and " free on " in text and "(tmpfs)" in text
    assert err.errno == errno.ENOSPC and isinstance(err, OSError)
    assert err.path == path
    assert err.needed > err.free


# ---------------------------------------------------------------------------------------------


def test_torch_save_on_full_disk(tmpfs):
    fs = tmpfs(8 * MB)
    path = fs / "checkpoints" / "step_00000010.pt"
    atomic_torch_save(state(100_000, 2.0), path)
    before = path.read_bytes()
    fill(fs, 1 * MB)
    free_before = shutil.disk_usage(fs).free

    with pytest.raises(DiskFull) as info:
        atomic_torch_save(state(3 * MB), path)
    err = info.value
    check_one_line(err, path)
    assert err.needed > 3 * MB  # exact serialized size, not the part written before it failed
    assert err.free >= free_before - PAGE  # the temporary file's space was given back first
    assert isinstance(err.__cause__, (RuntimeError, OSError))

    assert path.read_bytes() == before
    assert torch.equal(torch.load(path, weights_only=True)["w"], state(100_000, 2.0)["w"])
    assert no_tmp_left(fs)


def test_write_json_on_full_disk(tmpfs):
    fs = tmpfs(4 * MB)
    path = fs / "manifest.json"
    atomic_write_json(path, {"old": True})
    fill(fs, 64 * 1024)
    big = {"blob": "x" * (2 * MB)}

    with pytest.raises(DiskFull) as info:
        atomic_write_json(path, big)
    err = info.value
    check_one_line(err, path)
    assert err.needed == len(json.dumps(big, indent=2, sort_keys=True) + "\n")
    assert json.loads(path.read_text()) == {"old": True}
    assert no_tmp_left(fs)


def test_append_jsonl_on_full_disk_leaves_no_torn_line(tmpfs):
    fs = tmpfs(2 * MB)
    log = fs / "status.jsonl"
    for i in range(3):
        append_jsonl(log, {"event": "started", "i": i})
    before = log.read_bytes()
    filler = fill(fs, 0)  # the log's last page still has room: the next write is a short one

    with pytest.raises(DiskFull) as info:
        append_jsonl(log, {"event": "failed", "reason": "y" * 100_000})
    err = info.value
    assert err.path == log and err.needed > 100_000 and err.needed > err.free
    assert "no space left on device writing" in str(err)
    assert log.read_bytes() == before
    assert [json.loads(line)["i"] for line in log.read_text().splitlines()] == [0, 1, 2]

    filler.unlink()  # space again: the log goes on where it stopped
    append_jsonl(log, {"event": "resumed"})
    assert [json.loads(line)["event"] for line in log.read_text().splitlines()][-1] == "resumed"


def test_checkpoint_save_on_full_disk_keeps_latest(tmpfs):
    from training import checkpoint

    fs = tmpfs(8 * MB)
    run_dir = fs / "run"
    first = checkpoint.save(run_dir, 10, {"model": state(1 * MB), "final": False}, keep=2)
    filler = fill(fs, 512 * 1024)

    with pytest.raises(DiskFull) as info:
        checkpoint.save(run_dir, 20, {"model": state(2 * MB, 3.0), "final": False}, keep=2)
    err = info.value
    check_one_line(err, checkpoint.checkpoint_dir(run_dir) / "step_00000020.pt")
    assert checkpoint.latest(run_dir) == first
    assert checkpoint.load(first)["step"] == 10
    assert no_tmp_left(fs)

    filler.unlink()  # a relaunch with space again resumes from step 10 and saves on
    second = checkpoint.save(run_dir, 20, {"model": state(2 * MB, 3.0), "final": False}, keep=2)
    assert checkpoint.latest(run_dir) == second


def test_build_folder_on_full_disk(tmpfs):
    fs = tmpfs(2 * MB)
    fill(fs, 256 * 1024)

    def fill_set(folder: Path) -> None:
        with open(folder / "00000.tar", "wb") as f:  # written directly, not atomically
            f.write(b"z" * MB)

    with pytest.raises(DiskFull) as info:
        build_folder(fs / "set", {"n": 1}, fill_set)
    assert info.value.at_least and "needed at least" in str(info.value)
    assert not (fs / "set").exists()
    assert [p.name for p in fs.iterdir()] == ["filler"]  # no temporary sibling left


def _record(step: int, note: str) -> dict:
    from store.records import REQUIRED_KEYS, SCHEMA_VERSION

    rec: dict = {k: "x" for k in REQUIRED_KEYS}
    rec.update(schema_version=SCHEMA_VERSION, dataset="wds/synth_shapes",
               task="zeroshot_classification", step=step, metrics={"acc1": 0.5}, note=note)
    return rec


def test_an_eval_record_on_full_disk_keeps_the_old_one(tmpfs):
    from store.records import read_record, record_path, write_record

    fs = tmpfs(2 * MB)
    run = fs / "run"
    path = write_record(run, _record(10, "old"))
    assert path == record_path(run, 10, "wds/synth_shapes", "zeroshot_classification")
    fill(fs, 32 * 1024)

    with pytest.raises(DiskFull) as info:
        write_record(run, _record(10, "n" * MB))  # a rewrite of the same record
    err = info.value
    assert err.path == path and str(err).startswith(f"no space left on device writing {path}: ")
    assert err.needed > MB > err.free and "(tmpfs)" in str(err)
    assert read_record(path)["note"] == "old"
    assert no_tmp_left(fs)


def test_the_sweep_manifest_on_full_disk_keeps_the_old_one(tmpfs):
    from launcher.slurm import manifest_path, update_manifest

    fs = tmpfs(2 * MB)
    path = manifest_path(fs / "runs", "demo")
    path.parent.mkdir(parents=True)
    update_manifest(path, {"run-a": {"job_id": "1", "overrides": ["model=tiny_s"]}})
    before = path.read_bytes()
    fill(fs, 32 * 1024)

    with pytest.raises(DiskFull) as info:
        update_manifest(path, {"run-b": {"job_id": "2", "overrides": ["z" * MB]}})
    err = info.value
    check_one_line(err, path)
    assert path.read_bytes() == before  # run-a's entry is intact, not torn
    assert list(json.loads(path.read_text())["points"]) == ["run-a"]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # not moved aside as unreadable
    assert no_tmp_left(fs)


def test_a_status_log_event_on_full_disk_leaves_the_log_whole(tmpfs):
    from core.states import Event
    from launcher import rundir

    fs = tmpfs(2 * MB)
    run = fs / "run"
    run.mkdir()
    rundir.log_event(run, Event.START, stage="all")
    before = (run / "status.jsonl").read_bytes()
    filler = fill(fs, 0)

    with pytest.raises(DiskFull) as info:
        rundir.log_event(run, Event.FAILED, error="e" * 100_000)
    assert info.value.path == run / "status.jsonl"
    assert "no space left on device writing" in str(info.value)
    assert (run / "status.jsonl").read_bytes() == before
    assert rundir.state(run) == "partial"  # the log still parses: the start stands

    filler.unlink()
    rundir.log_event(run, Event.DONE)
    assert [e["event"] for e in rundir.events(run)] == ["start", "done"]


# ---------------------------------------------------------------------------------------------
# No mount needed


def test_other_errors_pass_through(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError) as info:
        atomic_write_json(blocker / "x.json", {})
    assert not isinstance(info.value, DiskFull)

    with pytest.raises(Exception) as info2:  # unpicklable: torch.save's own error, unchanged
        atomic_torch_save({"f": lambda: 0}, tmp_path / "x.pt")
    assert not isinstance(info2.value, DiskFull)
    assert no_tmp_left(tmp_path)

    with pytest.raises(RuntimeError, match="not space"):  # a RuntimeError with room to spare
        atomic._atomic(tmp_path / "y", _raise(RuntimeError("not space")), lambda: 10)
    assert no_tmp_left(tmp_path)


def _raise(err: Exception) -> Callable[[object], None]:
    def write(_f: object) -> None:
        raise err

    return write


def test_disk_full_message_and_pickle():
    err = DiskFull("/x/checkpoints/step_00000010.pt", 15_387_648, 2_100_000, "/x (tmpfs)")
    assert str(err) == (
        "no space left on device writing /x/checkpoints/step_00000010.pt: "
        "needed 15.4 MB, 2.1 MB free on /x (tmpfs)"
    )
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.needed == err.needed and again.errno == errno.ENOSPC
    assert DiskFull.human(512) == "512 B" and DiskFull.human(3 * 10**9) == "3.0 GB"
    quota = DiskFull("/q/f", 2000, 10**9, quota=True)
    assert str(quota) == "disk quota exceeded writing /q/f: needed 2.0 kB, 1.0 GB free"


# ---------------------------------------------------------------------------------------------
# End to end: a run whose disk fills up says why it stopped, and resumes


def _launch(root: Path, data_root: Path, *extra: str) -> subprocess.CompletedProcess:
    import sys

    from tests.helpers.procs import ROOT

    return subprocess.run(
        [sys.executable, "launch.py", "model=tiny_s", "data=syn4k", "eval=none", f"root={root}",
         f"data_root={data_root}", "train.workers=0", "train.keep_checkpoints=2", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_a_run_on_a_full_disk_fails_saying_so_and_resumes_when_there_is_room(tmpfs, tmp_path):
    from launcher import rundir
    from training import checkpoint

    data = tmp_path / "data"  # the generated shards live off the small disk
    probe = _launch(tmp_path / "probe", data, "samples=s6k")  # how large is one checkpoint?
    assert probe.returncode == 0, probe.stderr[-2000:]
    (final,) = (tmp_path / "probe").glob("*/checkpoints/final.pt")
    size = final.stat().st_size

    disk = tmpfs(int(3.5 * size) + 4 * MB)
    root = disk / "runs"
    filler = fill(disk, int(1.6 * size))  # room for the first step checkpoint, not the second
    failed = _launch(root, data, "samples=s18k", "train.checkpoint_every=40")
    assert failed.returncode != 0
    (run,) = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")]
    last = rundir.events(run)[-1]
    assert last["event"] == "failed", rundir.events(run)
    assert last["error"].startswith("DiskFull: no space left on device writing "), last
    assert "step_00000080.pt: needed" in last["error"] and "free on" in last["error"]
    assert checkpoint.latest(run).name == "step_00000040.pt"  # the previous one stays
    assert not list((run / "checkpoints").glob(".*.tmp"))

    filler.unlink()  # room again: the relaunch resumes from step 40
    again = _launch(root, data, "samples=s18k", "train.checkpoint_every=40")
    assert again.returncode == 0, again.stderr[-2000:]
    marker = checkpoint.read_marker(checkpoint.final(run))
    assert marker["step"] == 144 and marker["resumed_from"] == 40
    assert rundir.events(run)[-1]["event"] == "done"
