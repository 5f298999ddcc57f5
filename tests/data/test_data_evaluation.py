"""Streaming evaluation readers, source composition and the copy-the-first-mask baseline."""

from __future__ import annotations

import numpy as np
import pytest

from vosjax import metrics
from vosjax.data import (
    ConcatSource,
    DataWarning,
    DavisSource,
    LazyFrames,
    SyntheticSource,
    Video,
    copy_first_mask_baseline,
    copy_first_mask_prediction,
    davis_palette,
    iter_eval_videos,
    make_source,
)
from vosjax.errors import VosjaxError


class _CountingSource:
    """One synthetic video whose frames count their decodes."""

    def __init__(self, video):
        self.video, self.loads = video, []

    def __len__(self):
        return 1

    def __getitem__(self, i):
        v = self.video

        def load(t):
            self.loads.append(t)
            return v.frames[t]

        return Video(
            v.name,
            LazyFrames(v.num_frames, load, v.frames.shape[1:], np.uint8),
            v.masks,
            v.annotated,
            v.object_ids,
            v.first_frame,
            v.palette,
            v.frame_names,
        )


def test_streaming_decodes_one_frame_at_a_time(tiny_spec):
    src = _CountingSource(SyntheticSource(tiny_spec, "train")[0].load())
    ev = next(iter_eval_videos(src))
    assert len(ev) == 8 and ev.size == (40, 56) and src.loads == []
    it = iter(ev)
    f0 = next(it)
    f1 = next(it)
    assert src.loads == [0, 1]
    assert (
        f0.index == 0
        and f0.name == "00000"
        and f0.new_object_ids
        == (1,) + tuple(o for o in ev.object_ids if o != 1 and ev.first_frame[o] == 0)
    )
    np.testing.assert_array_equal(
        f0.gt, src.video.masks[0]
    )  # complete video: full ground truth every frame
    np.testing.assert_array_equal(f0.first_mask, src.video.first_appearance_mask(0))
    np.testing.assert_array_equal(f1.image, src.video.frames[1])


def test_real_judo_stream(davis_demo):
    with pytest.warns(DataWarning, match="00005.png"):
        (ev,) = list(iter_eval_videos(DavisSource(davis_demo, sequences=["judo"])))
        frames = [(f.index, f.new_object_ids, f.first_mask, f.gt) for f in ev]
    firsts = {i: (ids, m) for i, ids, m, _ in frames if ids}
    assert sorted(firsts) == [0, 5, 8, 13]
    assert [firsts[t][0] for t in (0, 5, 8, 13)] == [(1,), (2,), (3,), (4,)]
    for ids, m in firsts.values():
        assert m.shape == (480, 854) and set(np.unique(m)) == {0, *ids}
    assert all(gt is None for *_, gt in frames)  # first-appearance annotation only


def test_copy_first_mask_prediction_and_baseline():
    T, H, W = 4, 6, 8
    masks = np.zeros((T, H, W), np.uint8)
    for t in range(T):
        masks[t, 1:3, t : t + 2] = 1  # object 1 moves right
    masks[2:, 4:6, 5:7] = 2  # object 2 appears at frame 2 and stays
    v = Video(
        "toy",
        np.zeros((T, H, W, 3), np.uint8),
        masks,
        np.ones(T, bool),
        (1, 2),
        {1: 0, 2: 2},
        davis_palette(),
        tuple(f"{t:05d}" for t in range(T)),
    )
    pred = copy_first_mask_prediction(v)
    np.testing.assert_array_equal(pred[0], masks[0])
    np.testing.assert_array_equal(pred[1], masks[0])
    np.testing.assert_array_equal(pred[3], np.where(masks[2] == 2, 2, masks[0]))
    scores = copy_first_mask_baseline([v])
    want = metrics.summarize(
        {"toy": metrics.evaluate_sequence(masks, pred, object_ids=(1, 2))}
    ).global_metrics
    assert scores["J&F-Mean"] == pytest.approx(want["J&F-Mean"]) and scores["num_objects"] == 2
    # Evaluated frames 1, 2: object 1 overlaps 1/3 then 0; object 2 is absent then exact.
    assert scores["J-Mean"] == pytest.approx(((1 / 3 + 0) / 2 + (1 + 1) / 2) / 2)
    sparse = Video(
        "s",
        v.frames,
        masks,
        np.array([True, False, True, False]),
        (1, 2),
        {1: 0, 2: 2},
        davis_palette(),
        v.frame_names,
        complete=False,
    )
    with pytest.raises(VosjaxError, match="video 's' is not annotated on every frame"):
        copy_first_mask_baseline([sparse])


def test_make_source_and_concat(tiny_spec, tiny_davis):
    syn = make_source({"kind": "synthetic", "spec": tiny_spec, "split": "val"})
    dav = make_source(
        {"kind": "davis", "root": str(tiny_davis), "split": "val", "resolution": "40p"}
    )
    both = make_source(
        {
            "kind": "concat",
            "sources": [
                {"kind": "synthetic", "spec": tiny_spec, "split": "val"},
                {"kind": "davis", "root": str(tiny_davis), "split": "train", "resolution": "40p"},
            ],
            "repeats": [2, 1],
        }
    )
    assert len(syn) == 3 and len(dav) == 3 and len(both) == 3 * 2 + 6
    assert [both[i].name for i in range(6)] == [syn[i % 3].name for i in range(6)]
    assert both[6].name == "tiny-train-00000" and both[11].name == "tiny-train-00005"
    with pytest.raises(IndexError):
        both[12]
    with pytest.raises(VosjaxError, match="unknown 'kind' 'kinetics'"):
        make_source({"kind": "kinetics"})
    with pytest.raises(VosjaxError, match="bad arguments for a 'davis' source"):
        make_source({"kind": "davis", "folder": "x"})
    with pytest.raises(VosjaxError, match="repeats"):
        ConcatSource([syn], repeats=[0])
