"""Retrieval metrics against rankings computed by hand, ties included."""

from __future__ import annotations

import pytest
import torch

from evaluation.retrieval import ranks, retrieval_metrics, text_video_metrics


def test_ranks_by_hand():
    sims = torch.tensor([
        [0.9, 0.1, 0.2],  # true match best -> rank 1
        [0.5, 0.4, 0.6],  # two candidates above -> rank 3
        [0.1, 0.8, 0.7],  # one above -> rank 2
    ])
    assert ranks(sims).tolist() == [1, 3, 2]
    m = retrieval_metrics(sims, "t2v")
    assert m["t2v_r1"] == pytest.approx(100 / 3)
    assert m["t2v_r5"] == 100.0
    assert m["t2v_medr"] == 2.0
    assert m["t2v_meanr"] == pytest.approx(2.0)


def test_ties_are_broken_pessimistically():
    sims = torch.tensor([
        [0.5, 0.5, 0.1],  # tie with one other -> rank 2, not 1
        [0.3, 0.3, 0.3],  # three-way tie -> rank 3
        [0.0, 0.0, 1.0],
    ])
    assert ranks(sims).tolist() == [2, 3, 1]
    constant = torch.zeros(10, 10)
    m = retrieval_metrics(constant, "t2v")
    assert m["t2v_r1"] == 0.0 and m["t2v_medr"] == 10.0


def test_both_directions_and_chance():
    text = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    video = text.clone()
    video[3] = -video[3]  # one video far from its caption
    m = text_video_metrics(text, video)
    assert m["n"] == 20 and m["chance_r1"] == pytest.approx(5.0)
    assert m["t2v_r1"] == pytest.approx(95.0) and m["v2t_r1"] == pytest.approx(95.0)
    assert set(m) >= {"t2v_r1", "t2v_r5", "t2v_r10", "t2v_medr", "v2t_r1", "v2t_medr", "v2t_meanr"}


def test_rectangular_or_mismatched_inputs_are_rejected():
    with pytest.raises(ValueError, match="square"):
        ranks(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="captions"):
        text_video_metrics(torch.zeros(3, 4), torch.zeros(4, 4))


def test_median_rank_of_an_even_count_is_the_mean_of_the_middle_two():
    # true-match ranks 1, 2, 3, 4: np.median (the published convention) gives 2.5, not 2
    sims = torch.tensor([[4.0, 3.0, 2.0, 1.0],
                         [4.0, 3.0, 2.0, 1.0],
                         [4.0, 3.0, 2.0, 1.0],
                         [4.0, 3.0, 2.0, 1.0]])
    m = retrieval_metrics(sims, "t2v")
    assert m["t2v_medr"] == 2.5 and m["t2v_meanr"] == 2.5
