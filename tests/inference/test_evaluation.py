"""evaluate_source: the engine over a data source, scored in process with the DAVIS protocol."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vosjax import metrics
from vosjax.data import SyntheticSource, load_spec
from vosjax.errors import VosjaxError
from vosjax.inference import EngineConfig, eval_video_frames, evaluate_source, run_video
from vosjax.inference.evaluation import get_engine
from vosjax.data.evaluation import iter_eval_videos

SPEC = {
    "name": "ev",
    "height": 48,
    "width": 64,
    "num_frames": 6,
    "num_objects": [1, 3],
    "late_appearance": 0.5,
    "splits": {"val": {"seed": 7, "num_videos": 3}},
}
CONFIG = EngineConfig(max_objects=4, bucket_objects=False)


@pytest.fixture(scope="module")
def source():
    return SyntheticSource(load_spec("demo", **SPEC), "val")


def test_scores_equal_running_and_scoring_by_hand(source, toy_model, toy_variables):
    summary, scores = evaluate_source(
        toy_model, toy_variables, source, CONFIG, max_videos=2, return_scores=True
    )
    engine = get_engine(toy_model, CONFIG)
    assert get_engine(toy_model, CONFIG) is engine  # cached: later evaluations do not recompile
    by_hand = {}
    for ev in iter_eval_videos(source, 2):
        pred = np.stack(
            [
                p.labels
                for p in run_video(engine, toy_variables, eval_video_frames(ev), len(ev.object_ids))
            ]
        )
        by_hand[ev.name] = metrics.evaluate_sequence(
            np.asarray(ev.video.masks), pred, object_ids=ev.object_ids
        )
    assert list(scores) == list(by_hand) and len(scores) == 2
    for name in scores:
        assert scores[name].object_ids == by_hand[name].object_ids
        np.testing.assert_array_equal(scores[name].j, by_hand[name].j)
    assert summary == metrics.summarize(by_hand)
    assert engine.num_traces == 1
    # A ConfigDict-like mapping of engine fields works too.
    again = evaluate_source(toy_model, toy_variables, source, CONFIG.to_dict(), max_videos=2)
    assert again == summary


def test_incomplete_ground_truth_is_an_error(source, toy_model, toy_variables):
    class Partial:
        def __len__(self):
            return 1

        def __getitem__(self, i):
            v = source[i]
            annotated = np.ones(v.num_frames, bool)
            annotated[2] = False
            return dataclasses.replace(v, annotated=annotated)

    with pytest.raises(VosjaxError, match="ground truth on 5 of 6 frames"):
        evaluate_source(toy_model, toy_variables, Partial(), CONFIG)
    with pytest.raises(VosjaxError, match="no videos"):
        evaluate_source(toy_model, toy_variables, source, CONFIG, max_videos=0)
