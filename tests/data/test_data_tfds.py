"""TFDS end to end: generated DAVIS folder -> ArrayRecord -> tfds.data_source -> Video."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip(
    "tensorflow_datasets",
    reason="the 'tfds' extra (tensorflow-datasets, array_record) is not installed",
)

from vosjax.data import DavisSource, make_train_pipeline  # noqa: E402
from vosjax.data.tfds_builder import TfdsSource, build_tfds_dataset  # noqa: E402
from vosjax.errors import VosjaxError  # noqa: E402


@pytest.fixture(scope="module")
def prepared(tiny_davis, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    builder = build_tfds_dataset(tiny_davis, data_dir, year="2017", resolution="40p")
    return builder, data_dir


def test_builder_writes_array_record_splits_that_read_back_exactly(prepared, tiny_davis):
    builder, data_dir = prepared
    assert builder.info.file_format.value == "array_record"
    assert {s: builder.info.splits[s].num_examples for s in ("train", "val")} == {
        "train": 6,
        "val": 3,
    }
    assert list((data_dir / "vosjax_davis" / "2017-40p" / "1.0.0").glob("*.array_record*"))
    src = TfdsSource("train", data_dir, year="2017", resolution="40p")
    folder = DavisSource(tiny_davis, split="train", resolution="40p")
    assert len(src) == len(folder) == 6
    by_name = {src[i].name: i for i in range(len(src))}
    assert sorted(by_name) == folder.sequences
    for j in range(len(folder)):
        want = folder[j]
        got = src[by_name[want.name]]
        assert (
            got.object_ids == want.object_ids
            and got.first_frame == want.first_frame
            and got.complete
        )
        assert got.frame_names == want.frame_names
        np.testing.assert_array_equal(got.annotated, want.annotated)
        np.testing.assert_array_equal(np.asarray(got.frames), np.asarray(want.frames))
        np.testing.assert_array_equal(np.asarray(got.masks), np.asarray(want.masks))
        np.testing.assert_array_equal(got.palette, want.palette)
    # Picklable (grain workers reopen the data source) and usable by the training pipeline.
    again = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(np.asarray(again[0].masks), np.asarray(src[0].masks))
    it = make_train_pipeline(
        {"batch_size": 2, "crop_size": (24, 24)}, src, seed=0, process_index=0, process_count=1
    )
    assert next(it)["frames"].shape == (2, 3, 24, 24, 3)
    it.close()
    with pytest.raises(VosjaxError, match="cannot open split 'test'"):
        TfdsSource("test", data_dir, year="2017", resolution="40p")
    with pytest.raises(VosjaxError, match="no JPEGImages/480p"):
        build_tfds_dataset(tiny_davis, data_dir, resolution="480p")
