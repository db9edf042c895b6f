"""`vtp shard` on the synthetic dataset: what lands, what fails and why, and who can read it."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tools.media import probe_frames
from tools.shard import ShardConfig, TranscodeOptions, load_items, shard
from tools.shard.inputs import InputError

# What each broken-file kind must be reported as: the check that failed and ffmpeg's words.
DEFECT_REASONS = {
    "missing": "missing file",
    "zero_bytes": "empty file: 0 bytes",
    "truncated": "mp4 truncated: the file ends at byte",
    "not_video": "HTML page, not a video",
}


def _config(out: Path, **kw) -> ShardConfig:
    transcode = TranscodeOptions(**{"short_side": 120, **kw.pop("transcode", {})})
    return ShardConfig(out=out, transcode=transcode, workers=2, shard_size=8, progress=False, **kw)


def _manifest(out: Path) -> dict[str, dict]:
    return {r["key"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}


@pytest.fixture(scope="module")
def h264_run(synth_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("shard") / "h264"
    items, _ = load_items(synth_dir / "results.csv", synth_dir / "videos", None)
    return out, shard(items, _config(out))


def test_good_clips_land_and_broken_ones_have_specific_reasons(h264_run, ground_truth):
    out, summary = h264_run
    train = [g for g in ground_truth if g["split"] == "train"]
    manifest = _manifest(out)
    assert set(manifest) == {g["videoid"] for g in train}
    assert summary["inputs"] == len(train) == summary["ok"] + summary["failed"]
    for truth in train:
        row = manifest[truth["videoid"]]
        if truth["file_defect"] is None:
            assert row["status"] == "ok", row
            assert row["frames"] == truth["num_frames"] and row["bytes"] > 0 and row["shard"]
        else:
            assert row["status"] == "failed" and row["shard"] == ""
            assert DEFECT_REASONS[truth["file_defect"]] in row["reason"], \
                (truth["file_defect"], row)
    assert summary["failed"] == sum(g["file_defect"] is not None for g in train) > 0


def test_mds_shards_read_by_streaming_with_source_frame_counts(h264_run, ground_truth, tmp_path):
    from streaming import StreamingDataset

    from pipeline.shared_memory import clean_leaked_shared_memory

    out, summary = h264_run
    truth = {g["videoid"]: g for g in ground_truth}
    clean_leaked_shared_memory()
    dataset = StreamingDataset(local=str(out / "mds"), shuffle=False, batch_size=1)
    samples = [dataset[i] for i in range(len(dataset))]
    keys = [s["key"] for s in samples]
    assert len(keys) == len(set(keys)) == summary["ok"]
    assert {k for k, r in _manifest(out).items() if r["status"] == "ok"} == set(keys)
    for sample in samples[:5]:  # an independent full decode of the stored bytes
        clip = tmp_path / f"{uuid.uuid4().hex}.mp4"
        clip.write_bytes(sample["video"])
        decoded = probe_frames(clip)
        expected = truth[sample["key"]]
        assert decoded["codec_name"] == "h264" and decoded["height"] == 120
        assert decoded["nb_read_frames"] == sample["meta"]["frames"] == expected["num_frames"]
        assert sample["caption"] == expected["caption_raw"]
        assert sample["meta"]["source"].endswith(f"{sample['key']}.mp4")


def test_wds_tars_read_by_webdataset(h264_run):
    import webdataset as wds

    out, summary = h264_run
    tars = sorted(str(p) for p in (out / "wds").glob("*.tar"))
    assert tars and all(Path(t).with_suffix(".idx").exists() for t in tars)
    samples = list(wds.WebDataset(tars, shardshuffle=False))
    assert len(samples) == summary["ok"]
    assert {s["__key__"] for s in samples} == {
        k for k, r in _manifest(out).items() if r["status"] == "ok"}
    meta = json.loads(samples[0]["json"])
    assert set(meta) == {"frames", "fps", "width", "height", "codec", "source"}
    assert samples[0]["txt"] and samples[0]["mp4"][4:8] == b"ftyp"


def _dali_read(tars: list[str], ext: str) -> list[tuple[int, dict]]:
    """(decoded frame count, meta) per sample, via DALI readers.webdataset + CPU decoders.video."""
    from nvidia.dali import fn, pipeline_def

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1)
    def read():
        video, meta = fn.readers.webdataset(
            paths=tars, index_paths=[t[:-4] + ".idx" for t in tars], ext=[ext, "json"],
            missing_component_behavior="error", name="reader")
        return fn.decoders.video(video, device="cpu"), meta

    pipe = read()
    pipe.build()
    count = pipe.epoch_size("reader")
    out = []
    for _ in range(count):
        video, meta = pipe.run()
        out.append((video[0].shape()[0], json.loads(bytes(np.array(meta[0])))))
    return out


@pytest.mark.parametrize("codec,ext", [("vp9", "webm"), ("mjpeg", "avi")])
def test_cpu_codecs_decode_in_dali_with_source_frame_counts(synth_dir, ground_truth, tmp_path,
                                                            codec, ext):
    ids_as_text = pacsv.ConvertOptions(column_types={"videoid": pa.string()})
    rows = pacsv.read_csv(synth_dir / "results.csv", convert_options=ids_as_text)
    pacsv.write_csv(rows.slice(0, 6), tmp_path / "few.csv")
    items, _ = load_items(tmp_path / "few.csv", synth_dir / "videos", None)
    summary = shard(items, _config(tmp_path / "out", transcode={"codec": codec, "max_seconds": 2}))
    assert summary["ok"] >= 3
    truth = {g["videoid"]: g for g in ground_truth}
    decoded = _dali_read(sorted(str(p) for p in (tmp_path / "out" / "wds").glob("*.tar")), ext)
    assert len(decoded) == summary["ok"]
    for frames, meta in decoded:
        source = truth[meta["source"].rsplit("/", 1)[-1].removesuffix(".mp4")]
        assert frames == meta["frames"] == min(source["num_frames"], 2 * source["fps"])
        assert meta["codec"] == codec


def test_clean_parquet_rows_with_drop_reason_are_skipped_and_caption_used(synth_dir, tmp_path):
    ids_as_text = pacsv.ConvertOptions(column_types={"videoid": pa.string()})
    table = pacsv.read_csv(synth_dir / "results.csv", convert_options=ids_as_text)
    rows = table.slice(0, 4).to_pylist()
    cleaned = [{"videoid": r["videoid"], "page_dir": r["page_dir"], "caption": f"clean {i}",
                "drop_reason": "too_short" if i == 1 else None} for i, r in enumerate(rows)]
    pq.write_table(pa.Table.from_pylist(cleaned), tmp_path / "captions.parquet")
    items, dropped = load_items(tmp_path / "captions.parquet", synth_dir / "videos", None)
    assert dropped == 1
    assert [i.key for i in items] == [r["videoid"] for k, r in enumerate(rows) if k != 1]
    assert [i.caption for i in items] == ["clean 0", "clean 2", "clean 3"]


def test_bad_inputs_are_usage_errors(synth_dir, tmp_path):
    with pytest.raises(InputError, match="either MANIFEST"):
        load_items(None, None, None)
    (tmp_path / "bad.csv").write_text("id,text\n1,a\n")
    with pytest.raises(InputError, match="needs columns videoid, page_dir"):
        load_items(tmp_path / "bad.csv", synth_dir / "videos", None)
    from commands.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["shard", str(tmp_path / "bad.csv"), "--video-root", str(synth_dir / "videos"),
              "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_video2dataset_tars_with_a_failed_download(synth_dir, ground_truth, tmp_path):
    good = [g for g in ground_truth if g["split"] == "train" and g["file_defect"] is None][:2]
    tars = tmp_path / "v2d"
    tars.mkdir()
    with tarfile.open(tars / "00000.tar", "w") as tar:
        for i, g in enumerate(good):
            key = f"00000000{i}"
            _add(tar, f"{key}.mp4", (synth_dir / g["path"]).read_bytes())
            _add(tar, f"{key}.txt", g["caption_raw"].encode())
            meta = {"videoid": g["videoid"], "status": "success"}
            _add(tar, f"{key}.json", json.dumps(meta).encode())
        _add(tar, "000000002.txt", b"a failed one")
        failed = {"videoid": "999", "status": "failed_to_download", "error_message": "HTTP 404"}
        _add(tar, "000000002.json", json.dumps(failed).encode())
    summary = shard(load_items(None, None, tars)[0], _config(tmp_path / "out"))
    manifest = _manifest(tmp_path / "out")
    assert summary["inputs"] == 3 and summary["ok"] == 2 and summary["failed"] == 1
    assert {g["videoid"] for g in good} == {k for k, r in manifest.items() if r["status"] == "ok"}
    assert "no mp4 in tar" in manifest["999"]["reason"]
    assert "failed_to_download (HTTP 404)" in manifest["999"]["reason"]
    assert all(manifest[g["videoid"]]["frames"] == g["num_frames"] for g in good)


def test_command_reads_only_the_named_local_file_as_its_container(tmp_path):
    from tools.shard.transcode import build_command

    command = build_command(Path("rel/-i.mp4"), tmp_path / "a:b.mp4", TranscodeOptions())
    before_input = command[: command.index("-i")]
    assert command[command.index("-i") + 1] == f"file:{Path('rel/-i.mp4').absolute()}"
    assert before_input[before_input.index("-f") + 1] == "mov"
    assert before_input[before_input.index("-protocol_whitelist") + 1] == "file"
    assert command[-1] == f"file:{tmp_path / 'a:b.mp4'}"


def test_window_fps_and_short_side_are_applied(ground_truth, synth_dir, tmp_path):
    from tools.shard.check import check_output
    from tools.shard.transcode import transcode

    clip = next(g for g in ground_truth if g["split"] == "train" and g["file_defect"] is None
                and g["num_frames"] >= 4 * g["fps"])
    options = TranscodeOptions(fps=8, start=1.0, max_seconds=2.0, short_side=64, crf=30)
    transcode(synth_dir / clip["path"], tmp_path / "out.mp4", options)
    meta = check_output(tmp_path / "out.mp4", "h264")
    assert (meta["frames"], meta["fps"], meta["height"]) == (16, 8.0, 64)
    assert meta["width"] == round(64 * clip["width"] / clip["height"] / 2) * 2


def test_one_bad_output_in_a_decode_batch_is_named(ground_truth, synth_dir, tmp_path):
    from tools.shard.check import CheckError, check_outputs
    from tools.shard.transcode import transcode

    clip = next(g for g in ground_truth if g["split"] == "train" and g["file_defect"] is None)
    good = tmp_path / "good.mp4"
    transcode(synth_dir / clip["path"], good, TranscodeOptions(short_side=64))
    data = good.read_bytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(data[: len(data) // 2])  # faststart: the index survives, half the frames do not
    checked = check_outputs([good, bad, good], "h264")
    assert checked[0] == checked[2] and checked[0]["frames"] == clip["num_frames"]
    assert isinstance(checked[1], CheckError) and str(checked[1]).startswith("ffmpeg decode: ")



def test_mjpeg_is_checked_as_the_pipeline_reads_it(ground_truth, synth_dir, tmp_path):
    """JPEG frames cut from the AVI and decoded by DALI's image decoder: the same meta as
    ffmpeg's probe + DALI's video decoder, and a damaged frame is named by its index before
    DALI sees it (a failed decode can leave DALI 2.4's image decoder unstable)."""
    from pipeline.mjpeg import avi_chunks
    from tools.shard.check import CheckError, _check_decoded, check_outputs
    from tools.shard.transcode import transcode

    clip = next(g for g in ground_truth if g["split"] == "train" and g["file_defect"] is None)
    good = tmp_path / "good.avi"
    transcode(synth_dir / clip["path"], good, TranscodeOptions(codec="mjpeg", short_side=64))
    (by_jpeg,) = check_outputs([good], "mjpeg")
    assert by_jpeg == _check_decoded([good], "mjpeg", 60.0)[0]
    assert by_jpeg["frames"] == clip["num_frames"] and by_jpeg["fps"] == clip["fps"]

    data = good.read_bytes()
    chunks = avi_chunks(data)
    broken = {}
    for name, (index, damage) in {
        "overwritten": (5, lambda f: b"\xff" * len(f)),
        "zeroed_tail": (9, lambda f: f[:200] + bytes(len(f) - 202) + b"\xff\xd9"),
    }.items():
        offset, size = chunks[index]
        frame = damage(data[offset:offset + size])
        broken[name] = tmp_path / f"{name}.avi"
        broken[name].write_bytes(data[:offset] + frame + data[offset + size:])
    not_avi = tmp_path / "not_avi.avi"
    not_avi.write_bytes(b"RIFX" + data[4:])  # can't be cut: ffmpeg + the video decoder judge
    checked = check_outputs([good, broken["overwritten"], broken["zeroed_tail"], not_avi, good],
                            "mjpeg")
    assert checked[0] == checked[4] == by_jpeg
    assert all(isinstance(c, CheckError) for c in checked[1:4])
    assert str(checked[1]).startswith("avi: frame 5 is not a whole JPEG")
    assert str(checked[2]).startswith("avi: frame 9 is not a whole JPEG")
    assert str(checked[3]).startswith("ffmpeg decode: ")


def test_a_tar_cut_short_keeps_what_it_lists_and_records_the_loss(synth_dir, ground_truth,
                                                                  tmp_path):
    good = next(g for g in ground_truth if g["split"] == "train" and g["file_defect"] is None)
    video = (synth_dir / good["path"]).read_bytes()
    tars = tmp_path / "v2d"
    tars.mkdir()
    with tarfile.open(tars / "00000.tar", "w") as tar:
        for key in ("000000000", "000000001"):
            _add(tar, f"{key}.mp4", video)
            _add(tar, f"{key}.txt", b"caption")
    data = (tars / "00000.tar").read_bytes()
    cut = len(data) - len(video) // 2 - 3000  # inside the 2nd mp4
    (tars / "00000.tar").write_bytes(data[:cut])
    items, _ = load_items(None, None, tars)
    by_key = {i.key: i for i in items}
    assert by_key["000000000"].error is None
    assert by_key["tar-00000"].error.startswith("unreadable tar: ")
    summary = shard(items, _config(tmp_path / "out"))
    manifest = _manifest(tmp_path / "out")
    assert manifest["000000000"]["status"] == "ok"
    assert summary["inputs"] == len(items) == summary["ok"] + summary["failed"]
    # Its header comes before the cut, its video and caption do not: it fails, saying so.
    assert manifest["000000001"]["reason"] == \
        "truncated tar: the tar is cut inside this sample (its txt lost)"
