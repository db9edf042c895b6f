"""Bad input to `vtp train`, `vtp eval`, `vtp show-batch` and `vtp bench`: each is refused with
exit 2 and a message naming the culprit, no traceback, nothing lost; a checkpoint that would run
code is never unpickled; a corrupt clip in the shards is skipped, not fatal (issue 13).

Most cases run in-process through ``commands.cli.main``; those that need a fresh interpreter
(imports, a real training run) run as subprocesses, as a user runs them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_fixtures import tiny_checkpoint, train_shards, train_tiny_checkpoint  # noqa: F401

import recipes
from commands.cli import main as vtp_main

TINY = Path(recipes.__file__).parent / "tiny-synthetic.yaml"
ROOT = Path(__file__).resolve().parent.parent


def _refused(capsys, *argv: str) -> str:
    """Runs `vtp ARGV` in-process; asserts exit 2 without a traceback; returns stderr."""
    with pytest.raises(SystemExit) as exit_info:
        vtp_main(list(argv))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    return err


def _run(argv: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "commands.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    """A torch.save file whose pickle writes ``marker`` when fully unpickled."""

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('pwned')",))

    torch.save({"state": {"model": {"w": torch.zeros(2)}, "x": Evil()}}, path)
    return path


@pytest.fixture()
def odd_folders(tmp_path, train_shards) -> dict[str, Path]:  # noqa: F811
    """A plain folder, a plain file, an empty shard folder (all clips failed)."""
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "holiday.mp4").write_bytes(b"mine")
    empty = tmp_path / "empty-shards"
    (empty / "mds").mkdir(parents=True)
    (empty / "mds" / "index.json").write_text(json.dumps({"version": 2, "shards": []}))
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    return {"plain": plain, "empty": empty, "file": afile}


def _train_args(shards, tmp_path, *extra: str) -> list[str]:
    return ["train", str(TINY), f"data.path={shards}", f"trainer.save_folder={tmp_path}/ckpt",
            "loggers.file=null", "loggers.tensorboard=null", *extra]


def test_train_bad_data_and_paths(capsys, tmp_path, train_shards, odd_folders):  # noqa: F811
    cases = [
        (["data.path="], "data.path is empty"),
        ([f"data.path={tmp_path / 'nowhere'}"], "does not exist"),
        ([f"data.path={odd_folders['plain']}"], "not a shard folder"),
        ([f"data.path={odd_folders['file']}"], "is a file"),
        ([f"data.path={odd_folders['empty']}"], "holds no samples"),
        (["data.format=wds"], "use data.format=mds"),
        (["trainer.max_duration=0ba"], "trains nothing"),
        ([f"trainer.save_folder={odd_folders['file']}"], "is a file"),
        ([f"trainer.save_folder={odd_folders['file']}/sub"], "is a file"),
        ([f"loggers.file={odd_folders['file']}/log.txt"], "loggers.file"),
        ([f"trainer.load_path={tmp_path / 'gone.pt'}", "trainer.autoresume=false"],
         "trainer.load_path"),
        (["data.max_bad_samples=1.5"], "max_bad_samples"),
        (["seed=[1"], "not valid YAML"),
    ]
    for extra, expected in cases:
        err = _refused(capsys, *_train_args(train_shards, tmp_path, *extra))
        assert expected in err, (extra, err)
    assert odd_folders["file"].read_text() == "keep me"
    assert (odd_folders["plain"] / "holiday.mp4").read_bytes() == b"mine"
    assert not (tmp_path / "ckpt").exists()


def test_usage_errors_come_before_torch_loads(tmp_path):
    """A usage error of train and eval is found without importing torch (seconds saved)."""
    probe = ("import sys\nfrom commands.cli import main\n"
             "for argv in (['train', 'tiny-synthetic', 'data.path=/nowhere'],\n"
             "             ['eval', 'missing.pt', '--data', 'x.json', '--out', 'o'],\n"
             "             ['show-batch', '/nowhere', '--out', 'o'],\n"
             "             ['bench', 'pipeline', '/nowhere']):\n"
             "    try:\n        main(argv)\n    except SystemExit as e:\n"
             "        assert e.code == 2, argv\n"
             "assert 'torch' not in sys.modules, 'torch was imported'\nprint('light')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "light" in done.stdout, done.stderr[-2000:]


def test_train_refuses_a_load_path_that_would_run_code(tmp_path, train_shards):  # noqa: F811
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.pt", marker)
    done = _run(_train_args(train_shards, tmp_path, f"trainer.load_path={evil}",
                            "trainer.autoresume=false", "trainer.max_duration=2ba"), tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "evil.pt" in done.stderr
    assert "never unpickles code" in done.stderr
    assert not marker.exists(), "the checkpoint's code ran"


def test_eval_bad_checkpoints_and_json(capsys, tmp_path, tiny_checkpoint, synth_dir):  # noqa: F811
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.pt", marker)
    whole = tiny_checkpoint.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole[: len(whole) // 2])
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint")
    entries = json.loads((synth_dir / "test.json").read_text())[:3]
    good = tmp_path / "good.json"
    good.write_text(json.dumps(entries))  # paths relative to synth_dir: --video-root needed
    climbing = tmp_path / "climb.json"
    climbing.write_text(json.dumps([{**e, "video": f"../../{e['video']}"} for e in entries]))
    absolute = tmp_path / "abs.json"
    absolute.write_text(json.dumps([{**e, "video": str(synth_dir / e["video"])}
                                    for e in entries]))
    broken = tmp_path / "broken.json"
    broken.write_text('[{"video": ')
    out_file = tmp_path / "out.txt"
    out_file.write_text("keep me")
    root = ["--video-root", str(synth_dir)]

    def refused(checkpoint, data, *extra, out=tmp_path / "out"):
        return _refused(capsys, "eval", str(checkpoint), "--data", str(data), "--out",
                        str(out), "--no-progress", *extra)

    err = refused(evil, good, *root)
    assert "evil.pt" in err and "never unpickles code" in err and not marker.exists()
    assert "truncated" in refused(truncated, good, *root)
    assert "text.pt" in refused(text, good, *root)
    err = refused(tiny_checkpoint, good)  # no --video-root: every video is missing
    assert "none of the 3 videos" in err and "missing file" in err and "--video-root" in err
    assert "unsafe" in refused(tiny_checkpoint, climbing, "--video-root", str(synth_dir / "videos"))
    assert "unsafe" in refused(tiny_checkpoint, absolute, *root)
    assert "broken.json" in refused(tiny_checkpoint, broken, *root)
    assert "--out" in refused(tiny_checkpoint, good, *root, out=out_file)
    assert "--views" in refused(tiny_checkpoint, good, *root, "--views", "0")
    assert "--video-root" in refused(tiny_checkpoint, good, "--video-root", str(out_file))
    plain = tmp_path / "plain"
    plain.mkdir()
    err = refused(tiny_checkpoint, plain)
    assert "--data: " in err and "not a shard folder" in err
    err = refused(tiny_checkpoint, good, *root, "--mode", "finetune", "--finetune-data", str(plain))
    assert "--finetune-data: " in err
    mine = tmp_path / "mine"  # an unrelated folder that happens to hold a metrics.json
    mine.mkdir()
    (mine / "metrics.json").write_text("my own numbers")
    err = refused(tiny_checkpoint, good, *root, out=mine)
    assert "--out" in err and "not a `vtp eval` output" in err
    assert (mine / "metrics.json").read_text() == "my own numbers"
    err = refused(tiny_checkpoint, good, *root, "--set", "stride=abc")
    assert "--set stride='abc'" in err and "of type int" in err
    assert out_file.read_text() == "keep me" and not marker.exists()
    assert not (tmp_path / "out" / "test-shards").exists(), "nothing sharded for a refusal"


def test_show_batch_and_bench_bad_folders(capsys, tmp_path, train_shards, odd_folders):  # noqa: F811
    out = tmp_path / "out"
    for command in (["show-batch"], ["bench", "pipeline"]):
        tail = ["--out", str(out)] if command == ["show-batch"] else []
        err = _refused(capsys, *command, str(odd_folders["plain"]), *tail)
        assert "not a shard folder" in err and "plain" in err
        assert "holds no samples" in _refused(capsys, *command, str(odd_folders["empty"]), *tail)
        assert "does not exist" in _refused(capsys, *command, str(tmp_path / "none"), *tail)
        err = _refused(capsys, *command, str(train_shards), "--batch-size", "100", *tail)
        assert "--batch-size 100 is larger than the 16 samples" in err
        assert "--batch-size" in _refused(capsys, *command, str(train_shards), "--batch-size",
                                          "0", *tail)
    err = _refused(capsys, "show-batch", str(train_shards), "--out", str(out), "--format", "wds")
    assert "use data.format=mds" in err
    assert "is a file" in _refused(capsys, "show-batch", str(train_shards), "--out",
                                   str(odd_folders["file"]))
    assert "--epochs" in _refused(capsys, "bench", "pipeline", str(train_shards), "--epochs", "0")
    assert not out.exists() and odd_folders["file"].read_text() == "keep me"


def test_rerun_of_a_finished_run_says_so(tmp_path, tiny_checkpoint, train_shards):  # noqa: F811
    folder = tiny_checkpoint.parent
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    # the fixture's command again (4 batches, autoresume on): the run is at its max_duration
    overrides = [f"data.path={train_shards}", "trainer.global_batch_size=4",
                 "trainer.device_train_microbatch_size=4", "trainer.max_duration=4ba",
                 "trainer.save_interval=4ba", f"trainer.save_folder={folder}",
                 "loggers.console=false", "loggers.progress_bar=false", "loggers.file=null",
                 "loggers.tensorboard=null"]
    done = _run(["train", str(TINY), *overrides], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "already finished at 4 batches" in done.stdout
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def _scribble(shards: Path, out: Path, sample: int) -> str:
    """A copy of ``shards`` with 2 kB of noise inside the video of sample ``sample``."""
    from streaming import StreamingDataset

    shutil.copytree(shards, out)
    index = json.loads((out / "mds" / "index.json").read_text())
    shard = out / "mds" / index["shards"][0]["raw_data"]["basename"]
    record = StreamingDataset(local=str(out / "mds"), batch_size=1, shuffle=False)[sample]
    data = bytearray(shard.read_bytes())
    middle = data.find(record["video"]) + len(record["video"]) // 2
    assert middle > len(record["video"]) // 2, "the clip's bytes were not found in the shard"
    noise = random.Random(0)
    data[middle - 1024: middle + 1024] = bytes(noise.randrange(256) for _ in range(2048))
    shard.write_bytes(bytes(data))
    return record["key"]


def test_a_corrupt_clip_is_skipped_and_logged(tmp_path, train_shards):  # noqa: F811
    shards = tmp_path / "scribbled"
    key = _scribble(train_shards, shards, sample=2)
    overrides = [f"data.path={shards}", "trainer.global_batch_size=4",
                 "trainer.device_train_microbatch_size=4", "trainer.max_duration=4ba",
                 "trainer.save_interval=4ba", f"trainer.save_folder={tmp_path}/ckpt",
                 "scheduler.t_warmup=1ba", f"callbacks.batch_log={tmp_path}/batches.jsonl",
                 "loggers.console=false", "loggers.progress_bar=false",
                 f"loggers.file={tmp_path}/log.txt", "loggers.tensorboard=null"]
    done = _run(["train", str(TINY), *overrides], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 batches, 16 samples" in done.stdout
    log = (tmp_path / "log.txt").read_text()
    assert f"skipped corrupt sample {key}" in log and "undecodable video" in log
    batches = [json.loads(line) for line in (tmp_path / "batches.jsonl").read_text().splitlines()]
    assert all(len(b["keys"]) == 4 for b in batches), "a batch came up short"
    assert key not in {k for b in batches for k in b["keys"]}
    card = json.loads(next((tmp_path / "ckpt").rglob("run_card.json")).read_text())
    assert "undecodable video" in card["bad_samples"][key]


def test_bad_sample_budget_counts_distinct_keys_and_stops_past_it():
    from types import SimpleNamespace

    from recipes.callbacks import BadSampleBudgetError, BadSamples

    def batch(*keys):
        skipped = [{"key": k, "reason": "undecodable video: x"} for k in keys]
        return SimpleNamespace(batch={"skipped": skipped}, timestamp=SimpleNamespace(batch=3),
                               dataloader=SimpleNamespace(dataset=list(range(1000))))

    logger = SimpleNamespace(destinations=[], log_metrics=lambda metrics: None)
    counted = BadSamples(2)
    counted.after_dataloader(batch("a", "b"), logger)
    counted.after_dataloader(batch("a", "b"), logger)  # the same clips next epoch: still 2
    with pytest.raises(BadSampleBudgetError, match=r"3 corrupt samples.*\['a', 'b', 'c'\]"):
        counted.after_dataloader(batch("c"), logger)
    fraction = BadSamples(0.002)  # of 1000 samples: 2
    fraction.after_dataloader(batch("a", "b"), logger)
    with pytest.raises(BadSampleBudgetError, match="max_bad_samples=0.002 allows \\(2\\)"):
        fraction.after_dataloader(batch("c"), logger)
    with pytest.raises(BadSampleBudgetError, match="'z'"):
        BadSamples(0).after_dataloader(batch("z"), logger)


def test_shard_hashes_are_written_and_checked_when_copied_from_a_remote(tmp_path):
    from pipeline.sources import MdsSource
    from tools.shard.writers import write_mds, write_mds_index

    remote = tmp_path / "remote" / "mds"
    samples = [{"key": f"k{i}", "video": bytes([i]) * 200, "caption": "c", "meta": {"i": i}}
               for i in range(3)]
    write_mds(remote / "g0", samples)
    write_mds_index(remote, ["g0"])
    shard = json.loads((remote / "index.json").read_text())["shards"][0]["raw_data"]
    assert set(shard["hashes"]) == {"sha1"}
    assert MdsSource(str(tmp_path / "cache1"), str(remote), 1, False, 0)[1]["key"] == "k1"
    data = bytearray((remote / shard["basename"]).read_bytes())
    data[-10] ^= 0xFF  # damage in transit: one byte of the last sample's record
    (remote / shard["basename"]).write_bytes(bytes(data))
    copied = MdsSource(str(tmp_path / "cache2"), str(remote), 1, False, 0)[1]
    assert "error" in copied and "Checksum failure" in copied["error"]
