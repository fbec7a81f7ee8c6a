"""Runs that never lie: one writer per run folder and index, an epoch's files committed together (a kill
at any instant resumes at an epoch boundary), a full disk stops cleanly, and diverged epochs are never
kept. The kills are real SIGKILLs of a training subprocess at chosen writes."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from kerascnn.callbacks import divergence
from kerascnn.cli import main
from kerascnn.lock import LockedError, WriteLock
from kerascnn.train import RunError, TrainConfig, train

FRACTION = 0.005  # 270 Fashion-MNIST images: 5 steps of 64 an epoch
STEPS = int(np.ceil(270 / 64))
TINY = dict(  # validated and tested on a tenth of each class (600 and 1,000 images)
    model="lenet5", input_shape=(28, 28, 1), batch_size=64, train_fraction=FRACTION, eval_fraction=0.1,
    quiet=True,
)  # fmt: skip


def train_args(out, *extra, epochs="2"):
    return [sys.executable, "-m", "kerascnn.cli", "train", "--model", "lenet5", "--input-shape", "28,28,1",
            "--train-fraction", str(FRACTION), "--eval-fraction", "0.1", "--epochs", epochs,
            "--batch-size", "64", "--quiet",
            "--schedule", "constant", "--output", str(out), *extra]  # fmt: skip


# A training process that kills itself (SIGKILL: no cleanup runs) at a chosen moment: before or after
# the N-th rename into the run folder, or after the N-th training batch.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    point, n, run_dir = sys.argv[1], int(sys.argv[2]), os.path.abspath(sys.argv[3])
    sys.argv = ["kerascnn"] + sys.argv[4:]
    count = 0
    def die():
        os.kill(os.getpid(), signal.SIGKILL)
    if point in ("before_rename", "after_rename"):
        real = os.replace
        def replace(src, dst, *a, **k):
            global count
            if os.path.dirname(os.path.abspath(dst)) == run_dir:
                count += 1
                if count == n and point == "before_rename":
                    die()
                real(src, dst, *a, **k)
                if count == n:
                    die()
                return
            real(src, dst, *a, **k)
        os.replace = replace
    else:
        from kerascnn.callbacks import EpochCommit  # in every run's callback list
        def on_train_batch_end(self, batch, logs=None):
            global count
            count += 1
            if count == n:
                die()
        EpochCommit.on_train_batch_end = on_train_batch_end
    from kerascnn.cli import main
    main()
    """
)


def _leftovers(run_dir):
    return sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".") and p.name != ".kerascnn.lock")


def test_kill_at_a_dozen_points_then_resume_equals_an_uninterrupted_run(tmp_path):
    """One run, killed again and again (each process at another point: mid-epoch, before and after each
    kind of write, during the first save), then resumed to the end: the same epochs, history rows and
    optimizer steps as a run never interrupted, and no partial or staged file."""
    from tests.data.test_data import make_folder

    data = make_folder(tmp_path / "data", per_class=20)  # 36 train images (8 a batch: 5 steps), 4 val
    steps = 5
    out = tmp_path / "run"
    cli = ["train", "--model", "lenet5", "--input-shape", "28,28,1", "--data", str(data), "--epochs", "4",
           "--batch-size", "8", "--quiet", "--output", str(out)]  # fmt: skip
    # The renames into the run folder: a new run writes config.json, then per epoch the staged checkpoint,
    # last and (when it improved) best models, state.json (the commit), the three promotions and
    # history.csv. A resumed process first finishes a commit it finds half done (promotions) and
    # rewrites history.csv. Each point below is where one process dies (SIGKILL, no cleanup).
    points = [
        ("before_rename", 1),  # config.json: nothing of the run exists yet (a new run starts again)
        ("batch", 2),  # mid-epoch, before any epoch finished: resumes from epoch 0
        ("before_rename", 2),  # during the first save: the checkpoint staged, model_last half written
        ("after_rename", 3),  # all models staged, state.json not yet committed
        ("before_rename", 4),  # at the commit itself
        ("after_rename", 4),  # epoch 1 committed, nothing promoted
        ("after_rename", 2),  # the next process dies while it finishes those promotions
        ("batch", 3),  # promotions finished, history rewritten, then mid-epoch 2
        ("before_rename", 4),  # epoch 2's models being staged
        ("after_rename", 6),  # epoch 2 committed, promotions under way
        ("after_rename", 1),  # finishing them
        ("batch", 4),  # mid-epoch 3
    ]
    killed_at_epochs = []
    for i, (point, n) in enumerate(points):
        resume = ["--resume"] if (out / "config.json").exists() else []
        proc = subprocess.run(
            [sys.executable, "-c", KILLER, point, str(n), str(out), *cli, *resume],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == -signal.SIGKILL, (i, point, n, proc.returncode, proc.stderr[-2000:])
        state = out / "state.json"
        killed_at_epochs.append(json.loads(state.read_text())["epoch"] if state.exists() else None)
    assert killed_at_epochs[0] is None and killed_at_epochs[-1] == 2, killed_at_epochs  # 3 epochs

    done = subprocess.run(
        [sys.executable, "-m", "kerascnn.cli", *cli, "--resume"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == 4 and state["optimizer_steps"] == 4 * steps
    assert [row["epoch"] for row in state["history"]] == [0, 1, 2, 3]
    checkpoint = keras.saving.load_model(out / "checkpoint.keras")
    assert int(checkpoint.optimizer.iterations.numpy()) == 4 * steps  # no epoch trained twice
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 5
    assert _leftovers(out) == [], _leftovers(out)
    assert (out / "metrics.json").exists()


def test_disk_full_stops_cleanly_and_resumes(tmp_path, monkeypatch):
    """ENOSPC while epoch 2 is saved: a RunError naming the folder, epoch 1's files as they were, no
    partial file; once space is back, --resume finishes with the uninterrupted step count."""
    import kerascnn.runs as runs

    out = tmp_path / "full"
    real = runs.atomic_save_model
    calls = []

    def save(model, path):
        calls.append(path)
        if len(calls) == 4:  # epoch 1 saved 3 files (checkpoint, last, best); the 4th is epoch 2's
            with open(runs.Path(path).with_name(".half-written.partial.keras"), "wb") as f:
                f.write(b"PK")  # as a saver cut short leaves it (atomic_path removes its own temp)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(model, path)

    monkeypatch.setattr(runs, "atomic_save_model", save)
    with pytest.raises(
        RunError, match=rf"could not write to the run folder '{out}'.*No space left.*--resume"
    ):
        train(TrainConfig(**TINY, epochs=2, schedule="constant", output=str(out)))
    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == 1 and state["optimizer_steps"] == STEPS
    assert not [p for p in _leftovers(out) if ".e0002." in p]  # epoch 2's staged files are gone
    monkeypatch.setattr(runs, "atomic_save_model", real)
    train(TrainConfig(**TINY, epochs=2, output=str(out)), resume=True)
    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == 2 and state["optimizer_steps"] == 2 * STEPS
    assert _leftovers(out) == []  # the resume removed the interrupted write's file


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "busy"
    proc = subprocess.Popen(train_args(out, epochs="30"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        lock = out / ".kerascnn.lock"
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if lock.exists() and str(proc.pid) in lock.read_text():
                break
            time.sleep(0.1)
        assert proc.poll() is None
        for extra in ([], ["--resume"]):
            second = subprocess.run(train_args(out, *extra), capture_output=True, text=True, timeout=120)
            assert second.returncode == 1, second.stderr
            assert f"is being written by PID {proc.pid}" in second.stderr, second.stderr
            assert "Traceback" not in second.stderr
    finally:
        proc.kill()
        proc.wait()
    # the killed holder's lock is taken over at once: the run resumes
    with WriteLock.for_run(out):
        pass


def test_lock_is_exclusive_and_a_dead_holders_lock_is_taken_over(tmp_path):
    target = tmp_path / "index.npz"
    with WriteLock.for_file(target):
        with pytest.raises(LockedError, match=rf"'{target}' is being written by PID {os.getpid()}"):
            WriteLock.for_file(target).acquire()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from kerascnn.lock import WriteLock; "
         f"WriteLock.for_file({str(target)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LockedError, match=f"PID {holder.pid}"):
        WriteLock.for_file(target).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with WriteLock.for_file(target) as lock:
        assert lock.held


def test_index_append_is_refused_while_another_writes(tmp_path):
    from tests.data.test_data import make_folder

    data = make_folder(tmp_path / "imgs", per_class=2)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])  # fmt: skip
    model_file = tmp_path / "m.keras"
    model.save(model_file)
    index = tmp_path / "g.npz"
    args = ["index", str(model_file), "--data", str(data), "--out", str(index)]
    with WriteLock.for_file(index):
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and f"is being written by PID {os.getpid()}" in result.output
    assert not index.exists()
    result = CliRunner().invoke(main, args)  # once the other writer is done
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------------------------------------------
# Divergence
# ------------------------------------------------------------------------------------------------


def _tiny_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
    return model


@pytest.mark.parametrize(
    ("logs", "expected"),
    [
        ({"loss": float("inf"), "val_loss": 1.0}, "the training loss became inf in epoch 3"),
        ({"loss": float("nan")}, "the training loss became NaN in epoch 3"),
        ({"loss": 1.0, "val_loss": float("nan")}, "the validation loss became NaN in epoch 3"),
        ({"loss": 1.0, "val_loss": float("inf")}, "the validation loss became inf in epoch 3"),
        ({"loss": 3e30, "val_loss": 1.0}, "the training loss reached 3e+30 in epoch 3"),
        ({"loss": 1.0, "val_loss": 2.0}, None),
    ],
)
def test_divergence_names_what_and_when(logs, expected):
    problem = divergence(3, logs, _tiny_model(), num_classes=10)
    assert problem == expected or (expected and problem.startswith(expected)), problem


def test_divergence_finds_nan_weights_after_a_finite_loss():
    model = _tiny_model()
    kernel = model.get_layer("fc").kernel
    kernel.assign(np.where(np.arange(12).reshape(4, 3) == 5, np.nan, 0.0).astype("float32"))
    problem = divergence(2, {"loss": 0.5, "val_loss": 0.5}, model, num_classes=3)
    assert problem.startswith("the weights hold NaN after epoch 2 (layer 'fc', kernel)"), problem


def test_diverged_epoch_keeps_the_last_good_files_untouched(tmp_path, monkeypatch):
    import kerascnn.callbacks as kcallbacks

    real = kcallbacks.divergence

    def second_epoch_diverges(epoch, logs, model, num_classes):
        if epoch == 2:
            model.layers[-1].kernel.assign(np.full(model.layers[-1].kernel.shape, np.nan, "float32"))
        return real(epoch, logs, model, num_classes)

    monkeypatch.setattr(kcallbacks, "divergence", second_epoch_diverges)
    out = tmp_path / "nan2"
    before = {}

    with pytest.raises(RunError) as info:
        train(TrainConfig(**TINY, epochs=3, output=str(out), lr=1e-3))
    message = str(info.value)
    assert "the weights hold NaN after epoch 2" in message
    assert "last good epoch (1) are kept unchanged" in message and "--lr" in message
    assert "--clip-norm" in message
    for name in ("checkpoint.keras", "model_last.keras", "model_best.keras"):
        model = keras.saving.load_model(out / name, compile=False)
        assert all(np.isfinite(np.asarray(w)).all() for w in model.weights), name
        before[name] = (out / name).stat().st_mtime_ns
    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == 1 and len(state["history"]) == 1


def test_huge_lr_keeps_nothing_broken_and_says_what_to_try(tmp_path):
    out = tmp_path / "huge"
    with pytest.raises(RunError) as info:
        train(TrainConfig(**TINY, epochs=2, optimizer="sgd", lr=1e30, schedule="constant", output=str(out)))
    message = str(info.value)
    assert "in epoch 1" in message and "nothing to resume" in message
    assert "a lower --lr (this run: 1e+30)" in message and "--clip-norm" in message
    assert not (out / "checkpoint.keras").exists() and not (out / "model_best.keras").exists()


def test_clip_norm_reaches_the_optimizer():
    from kerascnn.optim import make_optimizer

    opt = make_optimizer(TrainConfig(clip_norm=1.0), 0.1)
    assert opt.global_clipnorm == 1.0


# ------------------------------------------------------------------------------------------------
# Resume with other options; options checked at the edge
# ------------------------------------------------------------------------------------------------


def test_resume_grows_epochs_and_refuses_other_changes(tmp_path):
    out = tmp_path / "grow"
    train(TrainConfig(**TINY, epochs=1, output=str(out)))
    runner = CliRunner()
    base = train_args(out, epochs="1")[3:]
    result = runner.invoke(main, [*base, "--resume", "--lr", "0.5"])
    assert result.exit_code != 0 and "--lr 0.5: the run in" in result.output
    assert "keeps the options it was started with" in result.output and "--weights" in result.output
    result = runner.invoke(main, [*base[:-4], "--epochs", "2", "--output", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == 2 and state["optimizer_steps"] == 2 * STEPS
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 1  # the file as started
    assert "extended to 2 epochs" in (out / "run.log").read_text()


def test_resume_of_a_folder_without_a_finished_epoch_starts_at_epoch_0(tmp_path):
    out = tmp_path / "early"
    out.mkdir()
    cfg = TrainConfig(**TINY, epochs=1, output=str(out))
    from dataclasses import asdict

    (out / "config.json").write_text(json.dumps({"train": asdict(cfg)}, default=list))
    train(TrainConfig(**TINY, epochs=1, output=str(out)), resume=True)
    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == 1 and state["optimizer_steps"] == STEPS
    assert "no epoch had finished" in (out / "run.log").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "0"], "--batch-size"),
        (["--lr", "-1"], "--lr"),
        (["--clip-norm", "0"], "--clip-norm"),
        (["--val-split", "1.5"], "--val-split"),
        (["--train-fraction", "0"], "--train-fraction"),
        (["--eval-fraction", "1.5"], "--eval-fraction"),
        (["--mixup", "-1"], "--mixup"),
        (["--model-kwargs", "foo=1"], "has no option 'foo'; its options:"),
    ],
)
def test_train_options_are_checked_before_anything_is_written(tmp_path, args, message):
    out = tmp_path / "never"
    result = CliRunner().invoke(main, ["train", "--model", "lenet5", "--output", str(out), *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output and not out.exists()


def test_corrupt_config_is_named(tmp_path):
    out = tmp_path / "bad"
    out.mkdir()
    (out / "config.json").write_text('{"train": {"model": "lenet5", "bogus": 1}}')
    result = CliRunner().invoke(main, ["train", "--output", str(out), "--resume"])
    assert (
        result.exit_code == 1
        and f"{out / 'config.json'}: not a kerascnn training configuration" in result.output
    )
    (out / "config.json").write_text("{not json")
    result = CliRunner().invoke(main, ["train", "--output", str(out), "--resume"])
    assert result.exit_code == 1 and str(out / "config.json") in result.output


def test_summary_of_a_truncated_keras_file_names_it(tmp_path):
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    good = tmp_path / "m.keras"
    model.save(good)
    bad = tmp_path / "cut.keras"
    bad.write_bytes(good.read_bytes()[:300])
    result = CliRunner().invoke(main, ["summary", str(bad)])
    assert result.exit_code == 1 and f"{bad}: cannot load the Keras model" in result.output, result.output
    assert "Traceback" not in result.output and "not found" not in result.output.lower()
