"""The engine against a plain Python reference of its semantics, plus its invariants.

The reference re-implements the per-frame orchestration with Python control
flow and NumPy (explicit list of memorised frames with the keep-first ring,
given-mask merge, soft aggregation, argmax) and calls the stand-in model's
functions one frame at a time; the engine must agree with it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vosjax import metrics
from vosjax.data.normalize import normalize_frames
from vosjax.errors import VosjaxError
from vosjax.inference import Engine, EngineConfig, VideoSegmenter, run_batch, run_video
from vosjax.models.base import SegmentOptions
from vosjax.ops import boxes

EPS = 1e-7
SIZE = (48, 64)  # most tests share this frame size and BASE, so they share compiled steps
BASE = EngineConfig(max_objects=4, bucket_objects=False, return_probs=True)


def _aggregate_np(p: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Soft aggregation written out: p [O, H, W] -> P [O+1, H, W] over the present objects."""
    p = np.where(present[:, None, None], p, 0.0).astype(np.float64)
    bg = np.prod(1.0 - p, axis=0, keepdims=True)
    q = np.clip(np.concatenate([bg, p]), EPS, 1 - EPS)
    logit = np.log(q) - np.log1p(-q)
    logit[1:][~present] = -1e4
    e = np.exp(logit - logit.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def reference_run(model, variables, frames, given, num_slots, mem_every, capacity, top_k):
    """Per-frame propagation with Python control flow (the semantics the engine compiles).

    Memory = the list of written (frame index, masks) with the keep-first ring of
    ``capacity`` frames; frame t is written when t - last_write >= mem_every or
    masks are given at t. Returns aggregated probabilities [T, O+1, H, W].
    """
    # The model's own functions, each compiled once (the orchestration below is plain Python).
    encode = jax.jit(
        lambda frame: model.encode_key(variables, normalize_frames(jnp.asarray(frame))[None, None])
    )
    memorize = jax.jit(
        lambda mem, frame, masks, feats: model.memorize(
            variables,
            mem,
            normalize_frames(frame)[None, None],
            masks[None, :, None],
            jnp.ones((1, num_slots), bool),
            feats,
            jnp.ones(1, bool),
        )
    )
    segment = jax.jit(
        lambda mem, feats, valid: model.segment(
            variables, mem, feats, valid[None], SegmentOptions(top_k=top_k)
        )
    )
    ids: list[int] = []
    valid = np.zeros(num_slots, bool)
    written: list[tuple[int, np.ndarray]] = []  # (t, P_obj [O, H, W])
    last_write = None
    out = []
    for t, frame in enumerate(frames):
        feats = encode(frame)
        if written:
            mem = model.init_memory(variables, 1, num_slots, feats["key"].shape[2:4])
            for s, masks in written:
                mem = memorize(mem, frames[s], masks, encode(frames[s]))
            logits = segment(mem, feats, valid)
            p = 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logits[0, :, 0], np.float64), -50, 50)))
            p = np.where(valid[:, None, None], p, 0.0)
        else:
            p = np.zeros((num_slots, *frame.shape[:2]))
        present = valid.copy()
        if t in given:
            new = [int(k) for k in np.unique(given[t]) if k]
            ids += [k for k in new if k not in ids]
            g = np.stack(
                [given[t] == k for k in ids]
                + [np.zeros(frame.shape[:2], bool)] * (num_slots - len(ids))
            ).astype(np.float64)
            gslots = np.array([k in new for k in ids] + [False] * (num_slots - len(ids)))
            union = np.max(np.where(gslots[:, None, None], g, 0.0), axis=0)
            if valid.any():  # the objects tracked so far: their aggregated probabilities
                p = _aggregate_np(p, valid)[1:]
            p = np.where(gslots[:, None, None], g, p * (1 - union))
            present |= gslots
        P = _aggregate_np(p, present)
        out.append(P)
        if t in given or t - last_write >= mem_every:
            written.append((t, P[1:].astype(np.float32)))
            if len(written) > capacity:
                del written[1]  # keep the first frame, drop the oldest of the others
            last_write = t
        valid = present
    return np.stack(out)


def test_per_frame_matches_reference(tk):
    mem_every, capacity = 2, 3  # frames 0, 2, 4, ... written; the ring holds first + 2 latest
    frames, labels = tk.make_video(9, SIZE, appear=(0, 0, 4), seed=1, noise=6)
    given = tk.first_masks(labels)
    model = tk.ColorMemory({"name": "colormem", "memory_frames": capacity})
    variables = model.init(None, None, None, None)
    cfg = BASE.replace(memory_policy="every_k", mem_every=mem_every, top_k=5)
    seg = VideoSegmenter((model, variables), cfg)
    preds = [p for t, f in enumerate(frames) for p in seg.step(f, given.get(t))]
    want = reference_run(model, variables, frames, given, 4, mem_every, capacity, 5)
    for t, p in enumerate(preds):  # K = 1 + objects seen so far
        np.testing.assert_allclose(p.probs, want[t, : p.probs.shape[0]], atol=2e-5)
        np.testing.assert_allclose(want[t, p.probs.shape[0] :], 0.0, atol=1e-6)
    ref_labels = np.array([0, 1, 2, 3], np.uint8)[np.argmax(want, axis=1)]
    assert np.mean(np.stack([p.labels for p in preds]) != ref_labels) < 1e-3
    assert seg.engine.num_traces == 1


def test_tracks_objects_and_preserves_ids(tk, toy_engine, toy_variables):
    frames, labels = tk.make_video(14, SIZE, appear=(0, 0, 6), seed=2, speed=1.0)
    ids = np.array([0, 7, 3, 200], np.uint8)  # non-contiguous palette ids
    labels = ids[labels]
    given = tk.first_masks(labels)
    engine = toy_engine(BASE)
    preds = list(
        run_video(
            engine, toy_variables, ((f, given.get(t)) for t, f in enumerate(frames)), num_objects=3
        )
    )
    pred = np.stack([p.labels for p in preds])
    assert pred.dtype == np.uint8 and pred.shape == labels.shape
    assert set(np.unique(pred)) <= {0, 3, 7, 200}
    np.testing.assert_array_equal(pred[0], labels[0])  # the given frame is copied exactly
    np.testing.assert_array_equal(pred[6][labels[6] == 200], 200)
    assert not np.any(pred[:6] == 200)  # no object before it appears
    scores = metrics.evaluate_sequence(labels, pred, object_ids=(7, 3, 200))
    copy = np.zeros_like(labels)  # baseline: every object's first mask, copied forward
    for t in range(len(labels)):
        copy[t] = copy[t - 1] if t else 0
        if t in given:
            copy[t] = np.where(given[t] > 0, given[t], copy[t])
    baseline = metrics.evaluate_sequence(labels, copy, object_ids=(7, 3, 200))
    assert scores.j.mean() > max(0.6, baseline.j.mean() + 0.15), (
        scores.j.mean(axis=1),
        baseline.j.mean(axis=1),
    )
    assert preds[0].object_ids == (3, 7) and preds[-1].object_ids == (3, 7, 200)


class _CompileCounter:
    """Counts XLA backend compilations (jax.monitoring event) while active."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count = 0

    def __call__(self, event, duration, **kwargs):
        if event == self.EVENT:
            self.count += 1

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self)


def test_no_compilation_after_the_first_step(tk, toy_engine, toy_variables):
    with _CompileCounter() as probe:  # the counter does see compilations
        jax.jit(lambda x: x * 3 + 1)(jnp.arange(7.0))
    assert probe.count >= 1
    frames, labels = tk.make_video(12, SIZE, appear=(0, 5, 8), seed=3)
    given = tk.first_masks(labels)
    for clip, cfg in ((1, BASE.replace(box_filter="cv")), (5, BASE.replace(clip_length=5))):
        engine = toy_engine(cfg)
        seg = VideoSegmenter((engine, toy_variables))
        n = len(seg.step(frames[0], given[0]))  # the first step compiles
        with _CompileCounter() as counter:
            for t in range(1, len(frames)):
                n += len(seg.step(frames[t], given.get(t)))
            n += len(seg.flush())
            seg.reset()  # a second video of the same size reuses the compiled step
            for t, f in enumerate(frames[:6]):
                seg.step(f, given.get(t))
        assert n == len(frames)
        assert counter.count == 0, f"{counter.count} compilations after the first step (L={clip})"
        assert engine.num_traces == 1


def test_progressive_matching_option_reaches_the_model(tk, toy_engine, toy_variables):
    frames, labels = tk.make_video(11, SIZE, appear=(0, 0), seed=5)
    given = tk.first_masks(labels)
    res = {}
    for f_len in (None, 2):
        cfg = BASE.replace(clip_length=5, segment_len=f_len)
        preds = list(
            run_video(
                toy_engine(cfg), toy_variables, ((f, given.get(t)) for t, f in enumerate(frames))
            )
        )
        res[f_len] = np.stack([p.probs for p in preds])
    # Frames of the first segment of each clip read the same memory; later ones differ.
    np.testing.assert_allclose(res[None][1:3], res[2][1:3], atol=1e-6)
    assert np.abs(res[None][3:6] - res[2][3:6]).max() > 1e-3


def test_box_filter_is_algorithm1_on_the_predictions(tk, toy_engine, toy_variables):
    """Box filtering post-processes the predictions (the memory keeps the unfiltered ones):
    the engine's output equals vosjax.ops.boxes.filter_masks of its unfiltered output."""
    frames, labels = tk.make_video(12, SIZE, appear=(0, 0, 5), seed=6, speed=3.0)
    given = tk.first_masks(labels)
    probs = {}
    for mode in (None, "cv"):
        preds = list(
            run_video(
                toy_engine(BASE.replace(box_filter=mode)),
                toy_variables,
                ((f, given.get(t)) for t, f in enumerate(frames)),
            )
        )
        p = np.zeros((len(preds), 4, *frames.shape[1:3]))
        for i, pr in enumerate(preds):
            p[i, : pr.probs.shape[0]] = pr.probs
        probs[mode] = p
    obj = np.moveaxis(probs[None][:, 1:], 0, 1)  # [O, T, H, W]
    want = np.moveaxis(np.asarray(boxes.filter_masks(jnp.asarray(obj, jnp.float32), "cv")), 0, 1)
    np.testing.assert_allclose(probs["cv"][:, 1:], want, atol=1e-6)
    np.testing.assert_allclose(probs["cv"][:, 0], np.clip(1 - want.sum(1), 0, 1), atol=1e-6)
    assert np.abs(probs["cv"] - probs[None]).max() > 0.1  # the filter did something


def test_test_time_resolution(tk, toy_model, toy_variables):
    frames, labels = tk.make_video(8, (64, 96), appear=(0, 0), seed=7, speed=1.0)
    given = tk.first_masks(labels)
    engine = Engine(toy_model, EngineConfig(max_objects=2, resolution=48))
    assert engine.working_size((64, 96)) == (48, 72)
    preds = list(
        run_video(engine, toy_variables, ((f, given.get(t)) for t, f in enumerate(frames)))
    )
    pred = np.stack([p.labels for p in preds])
    assert pred.shape == labels.shape
    np.testing.assert_array_equal(pred[0], labels[0])
    assert metrics.evaluate_sequence(labels, pred, object_ids=(1, 2)).j.mean() > 0.6


def test_batch_of_videos_sharded_equals_one_by_one(tk, toy_engine, toy_variables):
    videos = [tk.make_video(7 + 2 * i, SIZE, appear=(0, 0, 3 + i), seed=10 + i) for i in range(2)]
    engine = toy_engine(BASE.replace(clip_length=5))
    singles = []
    for frames, labels in videos:
        g = tk.first_masks(labels)
        singles.append(
            np.stack(
                [
                    p.labels
                    for p in run_video(
                        engine,
                        toy_variables,
                        ((f, g.get(t)) for t, f in enumerate(frames)),
                        num_objects=4,
                    )
                ]
            )
        )
    inputs = [[(f, tk.first_masks(lab).get(t)) for t, f in enumerate(fr)] for fr, lab in videos]
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("data",))  # Auto axis types
    batched = run_batch(engine, toy_variables, inputs, SIZE, num_objects=4, mesh=mesh)
    for a, b in zip(singles, batched):
        np.testing.assert_array_equal(a, b)


def test_step_input_errors(toy_model, toy_variables):
    engine = Engine(toy_model, EngineConfig(max_objects=2))
    state = engine.init_state(toy_variables, 1, (16, 16))
    f = jnp.zeros((1, 1, 16, 16, 3), jnp.uint8)
    with pytest.raises(VosjaxError, match="uint8"):
        engine.step(toy_variables, state, f.astype(jnp.float32))
    with pytest.raises(VosjaxError, match=r"uint8\[B=1, L=1"):
        engine.step(toy_variables, state, jnp.zeros((1, 2, 16, 16, 3), jnp.uint8))
    with pytest.raises(VosjaxError, match="holds slot 3 but the state has 2"):
        engine.step(toy_variables, state, f, np.full((1, 16, 16), 3))
    with pytest.raises(VosjaxError, match="frame_valid"):
        engine.step(toy_variables, state, f, frame_valid=np.ones((1, 2), bool))
    with pytest.raises(VosjaxError, match="exceeds EngineConfig.max_objects"):
        engine.init_state(toy_variables, 1, (16, 16), 3)
    with pytest.raises(VosjaxError, match="motion_fn"):
        Engine(toy_model, EngineConfig(box_filter="pt"))
    with pytest.raises(VosjaxError, match="VOSModel"):
        Engine(object(), EngineConfig())  # type: ignore[arg-type]


def test_segmenter_errors(toy_engine, toy_variables):
    seg = VideoSegmenter((toy_engine(BASE), toy_variables))
    frame = np.zeros((*SIZE, 3), np.uint8)
    four = np.zeros(SIZE, np.uint8)
    four[:4, :4], four[8:12, 8:12], four[40:, :4], four[40:, 60:] = 5, 9, 7, 200
    seg.step(frame, four)
    assert seg.object_ids == (5, 7, 9, 200)
    with pytest.raises(VosjaxError, match="3 would be object number 5 but there are 4"):
        seg.step(frame, np.full(SIZE, 3, np.uint8))
    with pytest.raises(VosjaxError, match="frame is 8x8 but this video's frames are 64x48"):
        seg.step(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(VosjaxError, match=r"uint8\[H, W, 3\]"):
        seg.step(np.zeros((*SIZE, 3), np.float32))
    with pytest.raises(VosjaxError, match="different aspect ratio"):
        seg.step(frame, np.zeros((48, 8), np.uint8))
    with pytest.raises(VosjaxError, match="'objects' needs a 'mask'"):
        seg.step(frame, objects=[5])


def test_pad_to_pads_like_stm_and_crops_the_outputs(tk, toy_model, toy_variables):
    from vosjax.inference import steps

    for n in (48, 62, 63, 854, 480):  # the padding of STM / STCN's pad_divide_by(x, 16)
        extra = (16 - n % 16) % 16
        assert steps.pad_amounts((n, 16), 16) == ((extra // 2, extra - extra // 2), (0, 0))
    assert steps.pad_amounts((62, 90), None) == ((0, 0), (0, 0))
    x = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    pads = steps.pad_amounts((5, 7), 4)
    np.testing.assert_array_equal(steps.crop_hw(steps.pad_hw(x, pads, 1), pads), x)

    def run(frames, given, **cfg):
        engine = Engine(toy_model, EngineConfig(max_objects=2, return_probs=True, **cfg))
        preds = list(run_video(engine, toy_variables, ((f, given.get(t)) for t, f in enumerate(frames))))
        return engine, np.stack([p.labels for p in preds]), np.stack([p.probs for p in preds])

    frames, labels = tk.make_video(6, (64, 96), appear=(0, 0), seed=3, speed=1.0)
    given = tk.first_masks(labels)
    _, lab_a, p_a = run(frames, given)
    _, lab_b, p_b = run(frames, given, pad_to=16)  # already multiples: no change
    np.testing.assert_array_equal(lab_a, lab_b)
    np.testing.assert_allclose(p_a, p_b, atol=1e-6)

    frames, labels = frames[:, 1:63, 3:93], labels[:, 1:63, 3:93]  # 62 x 90
    given = tk.first_masks(labels)
    engine, lab, probs = run(frames, given, pad_to=16)
    assert engine.model_size((62, 90)) == (64, 96) and engine.feat_shape((62, 90)) == (16, 24)
    assert lab.shape == labels.shape and probs.shape[-2:] == (62, 90)
    np.testing.assert_array_equal(lab[0], labels[0])
    assert metrics.evaluate_sequence(labels, lab, object_ids=(1, 2)).j.mean() > 0.6
