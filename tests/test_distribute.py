"""Training on several devices and several workers, on a CPU: logical CPU devices stand in for
GPUs, and worker processes on 127.0.0.1 ports for machines. Real processes, real kills; no
traffic beyond the loopback interface."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import train_script
from unetlib.cli import main
from unetlib.evaluation import load_model

TIMEOUT = 240  # seconds any one training process may take before the test gives up on it


def _history(run: Path) -> list[dict[str, float]]:
    with (run / "history.csv").open() as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def test_mirrored_on_two_logical_cpus_matches_one_device_and_fills_a_last_batch_too_short_to_share(
    tiny_phantom, tmp_path, capsys
):
    # 13 slices in global batches of 4: the last validation batch holds one slice, which would leave
    # the second replica an empty batch (TensorFlow's convolutions fail on it), so it is filled.
    common = ["train", "--preset", "smoke", "--data", str(tiny_phantom), "--epochs", "1", "--max-train-slices", "13"]
    assert main([*common, "--out", str(tmp_path / "one"), "--batch-size", "4"]) == 0  # one device, in this process
    two = subprocess.run(  # logical devices must be set up before TensorFlow starts: a fresh process
        [
            sys.executable,
            "-m",
            "unetlib",
            *common,
            "--out",
            str(tmp_path / "two"),
            "--batch-size",
            "2",
            "--distribute",
            "mirrored",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "UNETLIB_CPU_REPLICAS": "2"},
    )
    assert two.returncode == 0, two.stderr
    assert "Trained on 2 replicas (mirrored): 4 slices per step" in two.stdout
    assert "the first 1 slice(s) are validated twice" in two.stderr
    one_row, two_row = _history(tmp_path / "one")[0], _history(tmp_path / "two")[0]
    assert all(math.isfinite(value) for value in two_row.values()), two_row
    # Same slices, same augmentation, same initial weights: the first epoch's loss agrees within
    # 2% (batch norm and the pooled Dice see each replica's half batch, not the whole batch).
    # A loss not divided among the replicas would come out twice as large.
    assert two_row["loss"] == pytest.approx(one_row["loss"], rel=0.02)


def test_cpu_replicas_must_be_a_positive_whole_number(tiny_phantom, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UNETLIB_CPU_REPLICAS", "two")
    argv = ["train", "--preset", "smoke", "--data", str(tiny_phantom), "--out", str(tmp_path / "run")]
    assert main([*argv, "--distribute", "mirrored"]) == 2
    error = capsys.readouterr().err
    assert "UNETLIB_CPU_REPLICAS='two'" in error and "Traceback" not in error


def test_multiworker_without_a_cluster_says_what_to_set(tiny_phantom, tmp_path, monkeypatch, capsys):
    for variable in [name for name in os.environ if name == "TF_CONFIG" or name.startswith("SLURM_")]:
        monkeypatch.delenv(variable)
    argv = ["train", "--preset", "smoke", "--data", str(tiny_phantom), "--out", str(tmp_path / "run")]
    assert main([*argv, "--distribute", "multiworker"]) == 2
    error = capsys.readouterr().err
    assert "TF_CONFIG" in error and "Traceback" not in error
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- two workers on 127.0.0.1


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("127.0.0.1", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def _worker_env(ports: list[int], index: int, tmp: Path) -> dict:
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    # Each worker's temporary folder lives under tmp, so the test can see that it is removed.
    return {
        **os.environ,
        "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        "TMPDIR": str(tmp),
    }


def _worker_script(tmp_path: Path, data: Path, out: Path, pause_at_epoch: int | None = None) -> Path:
    """A worker training the smoke preset (2 epochs, the learning rate scheduled over a time budget
    it does not reach) into ``out``."""
    config = f"make_config('smoke', data={str(data)!r}, epochs=2, max_minutes=30, distribute='multiworker')"
    return train_script(tmp_path, config, out, pause_at_epoch)


def _start_workers(script: Path, tmp_path: Path, pause: int | None = None) -> list[subprocess.Popen]:
    ports = _free_ports(2)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return [
        subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**_worker_env(ports, index, tmp_path / "tmp"), "PAUSE": "1" if index == pause else "0"},
        )
        for index in range(2)
    ]


def _outputs(processes: list[subprocess.Popen]) -> list[str]:
    try:
        return [process.communicate(timeout=TIMEOUT)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()


def test_two_workers_train_together_and_only_the_chief_writes(tiny_phantom, tmp_path):
    out = tmp_path / "run"
    chief, worker = _outputs(_start_workers(_worker_script(tmp_path, tiny_phantom, out), tmp_path))
    assert "finished chief" in chief and "finished worker" in worker, chief[-2000:] + worker[-2000:]
    # One training, seen from both ends: each worker reports the same loss in every epoch, and the
    # same learning rate, set from the chief's clock.
    assert chief.split("finished chief")[1] == worker.split("finished worker")[1]
    assert sorted(path.name for path in out.iterdir()) == [
        ".lock",
        "complete.json",
        "config.json",
        "curves.png",
        "history.csv",
        "model.keras",
        "snapshots",
        "tensorboard",
    ]
    assert [row["epoch"] for row in _history(out)] == [0, 1]
    assert load_model(out / "model.keras").output_shape == (None, 256, 128, 6)
    assert list((tmp_path / "tmp").iterdir()) == []  # the worker's temporary folder is gone


def test_a_killed_worker_and_a_restart_of_both_resume_from_the_last_finished_epoch(tiny_phantom, tmp_path):
    out = tmp_path / "run"
    script = _worker_script(tmp_path, tiny_phantom, out, pause_at_epoch=1)
    chief, worker = _start_workers(script, tmp_path, pause=1)
    try:
        for line in worker.stdout:
            if line.strip() == "paused":
                break
        else:
            pytest.fail(f"the worker never reached its pause (exit {worker.wait()})")
        state = out / "backup" / "state.json"
        deadline = time.monotonic() + 60
        while not (state.is_file() and json.loads(state.read_text())["epoch"] == 1):  # the chief commits epoch 0
            assert time.monotonic() < deadline, "the chief never committed the first epoch"
            time.sleep(0.2)
        worker.send_signal(signal.SIGKILL)  # the worker dies mid-run; the chief waits for it in vain
        worker.wait(timeout=30)
    finally:
        for process in (chief, worker):
            process.kill()
            process.wait(timeout=30)
    assert [row["epoch"] for row in _history(out)] == [0] and not (out / "complete.json").exists()

    outputs = _outputs(_start_workers(script, tmp_path))
    assert all("finished" in output for output in outputs), outputs[0][-2000:] + outputs[1][-2000:]
    assert [row["epoch"] for row in _history(out)] == [0, 1]  # epoch 0 kept, not trained again
    assert "Epoch 1/2" not in outputs[0] and "Epoch 2/2" in outputs[0]
    assert load_model(out / "model.keras").output_shape == (None, 256, 128, 6)
    assert not (out / "backup").exists()


def test_the_keras_mend_applies_only_to_the_keras_versions_it_was_tested_on(monkeypatch, caplog):
    import keras
    from keras.src.backend.tensorflow import trainer

    from unetlib import distribute

    assert distribute.mends_keras("3.15.1") and distribute.mends_keras("3.15.0rc1")
    assert not distribute.mends_keras("3.16.0") and not distribute.mends_keras("3.1.5")
    monkeypatch.setattr(distribute, "MENDED_KERAS_VERSIONS", ("0.1",))  # as if this Keras were untested
    before = trainer.reduce_per_replica
    with caplog.at_level("WARNING", logger="unetlib.distribute"):
        distribute._mend_keras_multiworker()
    assert trainer.reduce_per_replica is before and not getattr(trainer, "_unetlib_mended", False)
    assert f"not on this Keras {keras.version()}" in caplog.text and "runs unmended" in caplog.text
