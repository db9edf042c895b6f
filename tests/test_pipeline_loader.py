"""The Composer-facing loader: batch contract, microbatches, workers, WDS, exact resumption."""

from __future__ import annotations

import torch
from composer import Callback, Trainer
from composer.models import ComposerModel

from pipeline import DataConfig, build_dataloader, build_dataspec, split_batch
from pipeline.decode import normalize_video

SMALL = dict(batch_size=2, image_size=64, num_frames=8, stride=4, tubelet=(2, 16, 16),
             text_max_length=16, seed=3)


def _config(shards, **overrides) -> DataConfig:
    return DataConfig(path=str(shards.root), **{**SMALL, **overrides})


def test_batch_dict_contract(pipeline_shards):
    batch = next(iter(build_dataloader(_config(pipeline_shards["vp9"]))))
    assert batch["video"].shape == (2, 3, 8, 64, 64) and batch["video"].dtype == torch.float32
    assert batch["video_mask"].shape == (2, 4 * 4 * 4) and batch["video_mask"].dtype == torch.bool
    assert (batch["video_mask"].sum(1) == round(0.9 * 16) * 4).all()
    for name in ("text_ids", "text_mask", "mlm_ids", "mlm_labels"):
        assert batch[name].shape == (2, 16) and batch[name].dtype == torch.int64
    assert len(batch["keys"]) == 2 and set(batch["keys"]) <= set(pipeline_shards["vp9"].files)
    # Normalised with ImageNet statistics: roughly zero-centred, not 0-255.
    assert -3 < batch["video"].mean() < 3 and batch["video"].std() < 5


def test_uint8_hand_over_normalises_to_the_same_video(pipeline_shards):
    shards = pipeline_shards["vp9"]
    floats = next(iter(build_dataloader(_config(shards))))
    raw = next(iter(build_dataloader(_config(shards, normalize_on_device=True), False)))
    assert raw["video"].dtype == torch.uint8 and raw["keys"] == floats["keys"]
    assert torch.allclose(normalize_video(raw)["video"], floats["video"], atol=1e-4)
    assert normalize_video(floats)["video"] is floats["video"]


def test_split_batch_makes_microbatches_that_concatenate_back(pipeline_shards):
    batch = next(iter(build_dataloader(_config(pipeline_shards["vp9"], batch_size=4))))
    parts = split_batch(batch, 1)
    assert len(parts) == 4 and all(len(p["keys"]) == 1 for p in parts)
    assert sum((p["keys"] for p in parts), []) == batch["keys"]
    for name in ("video", "video_mask", "mlm_ids", "mlm_labels"):
        assert torch.equal(torch.cat([p[name] for p in parts]), batch[name])


def _keys(loader) -> list[list[str]]:
    return [batch["keys"] for batch in loader]


def test_workers_and_wds_give_the_same_batches_in_a_fixed_order(pipeline_shards):
    shards = pipeline_shards["vp9"]
    plain = list(build_dataloader(_config(shards)))
    again = list(build_dataloader(_config(shards, num_workers=2)))
    assert [b["keys"] for b in plain] == [b["keys"] for b in again]
    assert all(torch.equal(a["video"], b["video"]) and torch.equal(a["video_mask"], b["video_mask"])
               for a, b in zip(plain, again, strict=True))
    wds = _keys(build_dataloader(_config(shards, format="wds")))
    assert sorted(sum(wds, [])) == sorted(shards.files), "WDS reads every sample once"


def test_resume_from_dataset_state_continues_exactly(pipeline_shards):
    shards = pipeline_shards["vp9"]
    full = list(build_dataloader(_config(shards)))
    first = build_dataloader(_config(shards))
    iterator = iter(first)
    for _ in range(2):
        next(iterator)
    state = first.dataset.state_dict(num_samples=4, from_beginning=True)
    resumed = build_dataloader(_config(shards), clean_shared_memory=False)
    resumed.dataset.load_state_dict(state)
    rest = list(resumed)
    assert [b["keys"] for b in rest] == [b["keys"] for b in full[2:]]
    assert all(torch.equal(a["video"], b["video"]) for a, b in zip(rest, full[2:], strict=True))


class TinyModel(ComposerModel):
    """A throwaway model: enough parameters to train, records microbatch sizes."""

    def __init__(self):
        super().__init__()
        self.video = torch.nn.Linear(3, 1)
        self.text = torch.nn.Embedding(30522, 1)
        self.seen: list[int] = []

    def forward(self, batch):
        assert batch["video"].dtype == torch.float32, "the model always gets float video"
        self.seen.append(len(batch["keys"]))
        pooled = batch["video"].mean(dim=(2, 3, 4))
        masked = batch["video_mask"].float().mean(1, keepdim=True)
        return self.video(pooled) + self.text(batch["mlm_ids"]).mean(1) + masked

    def loss(self, outputs, batch):
        return outputs.pow(2).mean()


class KeyRecorder(Callback):
    def __init__(self):
        self.keys: list[list[str]] = []

    def after_dataloader(self, state, logger):
        self.keys.append(list(state.batch["keys"]))


def _train(shards, duration: str, tmp_path, data=None, **kwargs) -> tuple[KeyRecorder, Trainer]:
    recorder, model = KeyRecorder(), TinyModel()
    spec = build_dataspec(_config(shards, **(data or {})), False)
    trainer = Trainer(model=model, train_dataloader=spec,
                      max_duration=duration, device="cpu", callbacks=[recorder],
                      optimizers=torch.optim.SGD(model.parameters(), lr=0.01),
                      progress_bar=False, log_to_console=False, seed=0, **kwargs)
    trainer.fit()
    trainer.close()
    return recorder, trainer


def test_composer_trainer_microbatches_and_resumes_the_data_stream_exactly(pipeline_shards,
                                                                           tmp_path):
    shards = pipeline_shards["vp9"]
    whole, trainer = _train(shards, "4ba", tmp_path, device_train_microbatch_size=1,
                            data={"normalize_on_device": True})
    assert len(whole.keys) == 4 and trainer.state.model.seen == [1] * 8, (
        "2-sample batches must reach the model as 1-sample microbatches")
    _train(shards, "2ba", tmp_path, save_folder=str(tmp_path / "ckpt"), save_interval="2ba")
    # No spinning: only the dataset state in the checkpoint can put the stream at batch 3.
    resumed, trainer = _train(shards, "4ba", tmp_path, spin_dataloaders=False,
                              load_path=str(tmp_path / "ckpt" / "ep0-ba2-rank0.pt"))
    assert trainer.state.dataset_resumption["train"] is True
    assert resumed.keys == whole.keys[2:]


def test_wds_resume_with_workers_continues_exactly_across_epochs(pipeline_shards):
    shards = pipeline_shards["vp9"]
    config = _config(shards, format="wds", num_workers=2)
    loader = build_dataloader(config)
    first, second = _keys(loader), _keys(loader)
    assert sorted(sum(first, [])) == sorted(sum(second, [])) and first != second, (
        "every epoch reads every sample, in a new order")
    resumed = build_dataloader(config)
    resumed.dataset.load_state_dict({"epoch": 0, "sample_in_epoch": 2})  # 1 batch, odd count
    assert _keys(resumed) == first[1:]
    assert _keys(resumed) == second, "the skip applies once; the next epoch is epoch 1"
    late = build_dataloader(config)
    late.dataset.load_state_dict(loader.dataset.state_dict(num_samples=4, from_beginning=True))
    assert _keys(late) == second[2:]


def test_finetune_augmentations_change_training_clips_not_evaluation(pipeline_shards):
    shards = pipeline_shards["vp9"]
    plain = next(iter(build_dataloader(_config(shards, flip=False))))
    augmented = next(iter(build_dataloader(_config(shards, flip=False, rand_augment=(4, 7)),
                                           False)))
    assert augmented["keys"] == plain["keys"] and augmented["video"].shape == plain["video"].shape
    assert not torch.allclose(augmented["video"], plain["video"], atol=1e-3)
    erased = next(iter(build_dataloader(_config(shards, flip=False, random_erasing=1.0), False)))
    changed = (erased["video"] != plain["video"]).flatten(3).any(3)  # (B, C, T): frame touched
    assert changed.any(1).float().mean() > 0.5  # nearly every frame gets a rectangle
    evaluation = dict(flip=False, view=0, rand_augment=(4, 7), random_erasing=1.0)
    clean_eval = next(iter(build_dataloader(_config(shards, flip=False, view=0), False)))
    eval_batch = next(iter(build_dataloader(_config(shards, **evaluation), False)))
    assert torch.equal(eval_batch["video"], clean_eval["video"])  # training only
