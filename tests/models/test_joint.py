"""JOINT behind the VOSModel interface: transduction transformer, induction learner, decoder.

One training-style step (encode_key -> memorize -> segment -> loss, with its
gradients w.r.t. the params and the memorized masks) is compiled once per
module at a small size (2 videos, 2 object slots, 3 frames, 64 x 90) and reused
with other values of the same shapes. References: NumPy versions of eq. 1-5
(attention, instance norm, encoder, decoder) written here, and the LWL learner
of vosjax.learners.lwl (tested against a closed-form ridge solution in
tests/learners) called directly on the memory's templates.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from vosjax import losses
from vosjax.errors import VosjaxError
from vosjax.learners import lwl
from vosjax.methods import get_method
from vosjax.models import get_model, joint
from vosjax.models import joint_transformer as jt
from vosjax.ops.aggregate import INVALID_LOGIT

B, O, T, H, W = 2, 2, 3, 48, 74  # sizes that are not multiples of the strides
h, w = math.ceil(H / 16), math.ceil(W / 16)
P = h * w
ALL = jnp.ones((B,), bool)


# ----------------------------------------------------------------------------- NumPy references


def np_l2n(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def np_attention(q, k, v, tau, valid=None):
    """Eq. 1 for one batch row: softmax over the valid keys of n(q) n(k)^T / tau, times v."""
    logits = np_l2n(q.astype(np.float64)) @ np_l2n(k.astype(np.float64)).T / tau
    if valid is not None:
        logits = np.where(valid[None, :], logits, -np.inf)
    logits = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)) @ v.astype(np.float64)


def np_instance_norm(x, eps=1e-5):
    """[N, P, C]: each row and channel normalised over P."""
    mean = x.mean(axis=1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def np_dense(x, p):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def np_encoder(z, valid, phi, tau):
    """Eq. 2-3 for one video: z [S, P, C], valid [S]."""
    s, p, c = z.shape
    flat = z.reshape(s * p, c).astype(np.float64)
    qk = np_dense(flat, phi)
    a = np_attention(qk, qk, flat, tau, np.repeat(valid, p))
    return np_instance_norm((a + flat).reshape(s, p, c))


def np_decoder(x, z_enc, e_tra, valid, phi, psi, tau):
    """Eq. 4-5 for one video and one search frame: x [P, C], z_enc [S, P, C], e_tra [S, P, E]."""
    x = x.astype(np.float64)
    qk = np_dense(x, phi)
    x_attn = np_instance_norm((np_attention(qk, qk, x, tau) + x)[None])[0]
    s, p, c = z_enc.shape
    k = np_dense(z_enc.reshape(s * p, c).astype(np.float64), psi)
    return np_attention(
        np_dense(x_attn, psi), k, e_tra.reshape(s * p, -1), tau, np.repeat(valid, p)
    )


# ----------------------------------------------------------------------------- kernels


@settings(max_examples=6)
@given(seed=st.integers(0, 2**31 - 1), shape=st.sampled_from([(1, 5, 7, 3, 2), (2, 4, 9, 4, 5)]))
def test_normalized_attention_matches_numpy(seed, shape):
    b, n, m, c, cv = shape
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(b, n, c)).astype(np.float32)
    k = rng.normal(size=(b, m, c)).astype(np.float32)
    v = rng.normal(size=(b, m, cv)).astype(np.float32)
    valid = rng.uniform(size=(b, m)) > 0.3
    valid[:, 0] = True
    got = jax.jit(jt.normalized_attention, static_argnums=3)(q, k, v, 1 / 30, jnp.asarray(valid))
    for i in range(b):
        np.testing.assert_allclose(
            got[i], np_attention(q[i], k[i], v[i], 1 / 30, valid[i]), rtol=1e-4, atol=1e-5
        )


def test_normalized_attention_gradients_and_invalid_keys():
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(1, 3, 4)), rng.normal(size=(1, 5, 4))
    v = rng.normal(size=(1, 5, 2))
    valid = jnp.array([[True, True, False, True, False]])
    fn = jax.jit(lambda q, k, v: jt.normalized_attention(q, k, v, 0.5, valid))
    with jax.enable_x64(True):
        check_grads(fn, (q, k, v), order=1, modes=["rev"], atol=1e-5, rtol=1e-5)
    # an invalid key, whatever its content, has no influence
    k2, v2 = k.copy(), v.copy()
    k2[0, 2], v2[0, 4] = 100.0, -50.0
    np.testing.assert_allclose(fn(q, k2, v2), fn(q, k, v), rtol=1e-6)
    # no valid key at all reads zeros
    none = jt.normalized_attention(q, k, v, 0.5, jnp.zeros((1, 5), bool))
    np.testing.assert_array_equal(none, 0.0)
    with pytest.raises(VosjaxError, match="tau"):
        jt.normalized_attention(q, k, v, 0.0)


def test_instance_norm_matches_numpy():
    x = np.random.default_rng(1).normal(size=(3, 7, 4)).astype(np.float32) * 3 + 1
    np.testing.assert_allclose(
        jt.instance_norm(x), np_instance_norm(x.astype(np.float64)), rtol=1e-4, atol=1e-5
    )


# ----------------------------------------------------------------------------- the model


def make_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = rng.normal(size=(B, T, H, W, 3)).astype(np.float32)
    masks = np.zeros((B, O, T, H, W), np.float32)
    for b in range(B):
        for t in range(T):
            masks[b, 0, t, 6 + 2 * t : 24 + 2 * t, 8 + 5 * b : 30 + 3 * t] = 1.0
            masks[b, 1, t, 28 : 46 - t, 40 + 3 * t : 70] = 1.0
            frames[b, t] += 1.5 * masks[b, 0, t, ..., None] - 1.0 * masks[b, 1, t, ..., None]
    return jnp.asarray(frames), jnp.asarray(masks)


def sl(feats, s):
    return {k: v[:, s] for k, v in feats.items()}


def bce(logits, target):
    return jnp.mean(jnp.maximum(logits, 0) - logits * target + jnp.log1p(jnp.exp(-jnp.abs(logits))))


class Setup:
    """The tiny model and ONE compiled step: encode_key, memorize frame ``t_mem``, segment
    frames 1..2 (logits and the two branches' encodings), BCE, gradients w.r.t. the params
    and the masks."""

    def __init__(self):
        self.model = m = get_model(joint.default_config(tiny=True))
        self.frames, self.masks = make_inputs()
        self.obj_valid = jnp.ones((B, O), bool)
        self.variables = m.init(jax.random.key(0), self.frames, self.masks, self.obj_valid)
        self.empty = m.init_memory(self.variables, B, O, (h, w))
        v = self.variables

        def step(params, memory, t_mem, masks, obj_valid, write, refit):
            def loss(params, masks):
                var = {**v, "params": params}
                feats = m.encode_key(var, self.frames)
                take = lambda x, axis: jax.lax.dynamic_slice_in_dim(x, t_mem, 1, axis)
                f_mem = jax.tree_util.tree_map(lambda x: take(x, 1), feats)
                mem = m.memorize(
                    var,
                    memory,
                    take(self.frames, 1),
                    take(masks, 2),
                    obj_valid,
                    f_mem,
                    write,
                    refit,
                )
                query = sl(feats, slice(1, None))
                logits = m.segment(var, mem, query, obj_valid)
                enc = m.mask_encodings(var, mem, query)
                return bce(logits, masks[:, :, 1:]), (feats, mem, logits, enc)

            (_, aux), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(params, masks)
            return (*aux, grads)

        self.step = jax.jit(step)

    def run(self, masks, obj_valid, memory=None, t_mem=0, write=ALL, refit=ALL):
        """-> (feats, memory, logits [B, O, 2, H, W], (E_tra*, E_ind*), (param grads, mask grads))."""
        memory = self.empty if memory is None else memory
        return self.step(self.variables["params"], memory, t_mem, masks, obj_valid, write, refit)


@pytest.fixture(scope="module")
def tiny():
    return Setup()


@pytest.fixture(scope="module")
def tiny_run(tiny):
    feats, mem, logits, enc, grads = tiny.run(tiny.masks, tiny.obj_valid)
    tiny.feats = feats
    return mem, logits, enc, grads


def test_shapes_dtypes_finiteness_and_memory(tiny, tiny_run):
    m, s = tiny.model, tiny.model.settings
    f = jax.device_get(tiny.feats)
    chex.assert_shape(f["key"], (B, T, h, w, s.feature_dim))
    chex.assert_shape(f["key_ind"], (B, T, h, w, s.feature_dim))
    chex.assert_shape(f["proj_s4"], (B, T, math.ceil(H / 4), math.ceil(W / 4), s.channels))
    chex.assert_shape(f["proj_s32"], (B, T, math.ceil(H / 32), math.ceil(W / 32), s.channels))
    chex.assert_shape(f["frame_hw"], (B, T, H, W, 0))
    mem, logits, (e_tra, e_ind), _ = jax.device_get(tiny_run)
    chex.assert_shape(logits, (B, O, T - 1, H, W))
    assert logits.dtype == np.float32 and np.all(np.isfinite(logits))
    chex.assert_shape([e_tra, e_ind], (B, O, T - 1, h, w, s.enc_dim))
    sm, c, d = s.memory_frames, s.feature_dim, s.enc_dim
    chex.assert_shape(mem.templates.keys, (B, sm, P, 2 * c))
    chex.assert_shape(mem.templates.values, (B, sm, P, O * 3 * d))
    chex.assert_shape(mem.encoded, (B, sm, P, c))
    chex.assert_shape(mem.filters, (B, O, 3, 3, c, d))
    np.testing.assert_array_equal(mem.templates.valid, [[True, False, False]] * B)
    np.testing.assert_array_equal(mem.initialized, True)
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(mem))
    # the label encodings (encode_value, run op by op here: no jit) are what the compiled
    # step stored in the bank, per object
    enc = m.encode_value(tiny.variables, tiny.frames, tiny.masks, tiny.obj_valid, tiny.feats)
    enc = jax.device_get(enc)
    for k in ("e_tra", "e_ind", "weights"):
        chex.assert_shape(enc[k], (B, O, T, h, w, d))
    assert enc["e_tra"].min() >= 0 and enc["e_ind"].min() >= 0  # heads end with ReLU
    assert 0 < enc["weights"].min() and enc["weights"].max() < 1
    stored = mem.templates.values[:, 0].reshape(B, h, w, O, 3, d)
    for i, k in enumerate(("e_tra", "e_ind", "weights")):
        np.testing.assert_allclose(
            np.moveaxis(stored[..., i, :], 3, 1), enc[k][:, :, 0], rtol=1e-5, atol=1e-6
        )
    cos = losses.cosine_decoupling(
        enc["e_tra"].reshape(B * O * T, -1), enc["e_ind"].reshape(B * O * T, -1)
    )
    assert 0.0 <= float(cos) <= 1.0


def test_transformer_encoder_and_decoder_match_numpy(tiny, tiny_run):
    """Z_enc (eq. 2-3) in the memory and E_tra* (eq. 4-5) against NumPy from the params."""
    s = tiny.model.settings
    mem, _, (e_tra_star, _), _ = jax.device_get(tiny_run)
    params = jax.device_get(tiny.variables["params"])
    feats = jax.device_get(tiny.feats)
    c, d = s.feature_dim, s.enc_dim
    for b in range(B):
        z = mem.templates.keys[b, :, :, :c]
        valid = mem.templates.valid[b]
        want = np_encoder(z, valid, params["encoder"]["phi"], s.tau)
        np.testing.assert_allclose(mem.encoded[b][valid], want[valid], rtol=2e-4, atol=2e-4)
        e = mem.templates.values[b].reshape(-1, P, O, 3, d)[..., 0, :].reshape(-1, P, O * d)
        for t in range(T - 1):
            x = feats["key"][b, 1 + t].reshape(P, c)
            got = np_decoder(
                x,
                mem.encoded[b],
                e,
                valid,
                params["decoder"]["phi"],
                params["decoder"]["psi"],
                s.tau,
            )
            got = np.moveaxis(got.reshape(h, w, O, d), 2, 0)
            np.testing.assert_allclose(e_tra_star[b, :, t], got, rtol=2e-4, atol=2e-5)


def test_induction_learner_is_lwl_fit_on_the_templates(tiny, tiny_run):
    """Filters = steepest descent on eq. 6 over the valid templates (zero start), and
    E_ind* = T_w(X_ind)."""
    s = tiny.model.settings
    mem, _, (_, e_ind_star), _ = tiny_run
    c, d = s.feature_dim, s.enc_dim
    reg = tiny.variables["params"]["learner_reg"]
    z = mem.templates.keys[..., c:].reshape(B, -1, h, w, c)
    v = mem.templates.values.reshape(B, -1, h, w, O, 3, d)
    slot = mem.templates.valid[:, :, None, None, None].astype(jnp.float32)

    @jax.jit
    def reference(z_b, v_b, slot_b, x_b):
        fits = [
            lwl.fit(
                z_b,
                v_b[..., o, 1, :],
                v_b[..., o, 2, :] * slot_b,
                reg,
                jnp.zeros((3, 3, c, d)),
                s.learner_iters_init,
            )
            for o in range(O)
        ]
        return jnp.stack(fits), jnp.stack([lwl.apply(f, x_b) for f in fits])

    b = 1
    filters, star = reference(z[b], v[b], slot[b], tiny.feats["key_ind"][b, 1:])
    np.testing.assert_allclose(mem.filters[b], filters, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(e_ind_star[b], star, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(mem.filters).max()) > 0


def test_object_that_appears_later_reads_only_its_own_templates(tiny):
    """Object 1 appears at template 1: its learner is fit on template 1 alone (from zero) and its
    transduction attends to template 1 only (the authors' per-object memories)."""
    s = tiny.model.settings
    c, d = s.feature_dim, s.enc_dim
    first_only = jnp.asarray([[True, False]] * B)
    _, mem0, _, _, _ = tiny.run(tiny.masks, first_only)
    _, mem, _, (e_tra_star, _), _ = tiny.run(tiny.masks, tiny.obj_valid, mem0, 1)
    mem, e_tra_star = jax.device_get((mem, e_tra_star))
    np.testing.assert_array_equal(mem.templates.first, [[0, 1]] * B)
    reg = tiny.variables["params"]["learner_reg"]
    params = jax.device_get(tiny.variables["params"])
    feats = jax.device_get(tiny.feats) if hasattr(tiny, "feats") else None
    b = 0
    z = mem.templates.keys[b, :, :, c:].reshape(-1, h, w, c)
    v = mem.templates.values[b].reshape(-1, h, w, O, 3, d)
    own = np.array([False, True, False])[:, None, None, None].astype(np.float32)
    want = lwl.fit(z, v[..., 1, 1, :], v[..., 1, 2, :] * own, reg, jnp.zeros((3, 3, c, d)),
                   s.learner_iters_init)
    np.testing.assert_allclose(mem.filters[b, 1], want, rtol=1e-4, atol=1e-6)
    # transduction of object 1: eq. 4-5 over template 1 only; object 0 over templates 0 and 1
    if feats is None:
        feats = jax.device_get(tiny.model.encode_key(tiny.variables, tiny.frames))
    e = mem.templates.values[b].reshape(-1, P, O, 3, d)[..., 0, :]
    x = feats["key"][b, 1].reshape(P, c)
    for o, valid in ((0, [True, True, False]), (1, [False, True, False])):
        got = np_decoder(x, mem.encoded[b], e[:, :, o], np.array(valid),
                         params["decoder"]["phi"], params["decoder"]["psi"], s.tau)
        np.testing.assert_allclose(e_tra_star[b, o, 0], got.reshape(h, w, d), rtol=2e-4, atol=2e-5)


def test_second_template_refits_and_write_false_rows_are_untouched(tiny, tiny_run):
    s = tiny.model.settings
    mem, logits, _, _ = tiny_run
    probs = jax.nn.sigmoid(logits[:, :, :1])
    write = jnp.array([True, False])
    _, new, _, _, _ = tiny.run(
        jnp.concatenate([probs] * T, axis=2), tiny.obj_valid, mem, 1, write, write
    )
    chex.assert_trees_all_equal(
        jax.tree_util.tree_map(lambda x: x[1], new), jax.tree_util.tree_map(lambda x: x[1], mem)
    )
    np.testing.assert_array_equal(new.templates.valid[0], [True, True, False])
    np.testing.assert_array_equal(new.templates.count, [2, 1])
    # the first template is kept; Z_enc is recomputed over both templates
    np.testing.assert_array_equal(new.templates.keys[0, 0], mem.templates.keys[0, 0])
    params = jax.device_get(tiny.variables["params"])
    c, d = s.feature_dim, s.enc_dim
    want = np_encoder(
        np.asarray(new.templates.keys[0, :, :, :c]),
        np.asarray(new.templates.valid[0]),
        params["encoder"]["phi"],
        s.tau,
    )
    np.testing.assert_allclose(new.encoded[0, :2], want[:2], rtol=2e-4, atol=2e-4)
    # refit: warm start from the previous kernels, learner_iters_update steps on both templates
    z = new.templates.keys[0, ..., c:].reshape(-1, h, w, c)
    v = new.templates.values[0].reshape(-1, h, w, O, 3, d)
    slot = new.templates.valid[0, :, None, None, None].astype(jnp.float32)
    reg = tiny.variables["params"]["learner_reg"]
    ref = jax.jit(lambda z, e, wt, f0: lwl.fit(z, e, wt, reg, f0, s.learner_iters_update))(
        z, v[..., 0, 1, :], v[..., 0, 2, :] * slot, mem.filters[0, 0]
    )
    np.testing.assert_allclose(new.filters[0, 0], ref, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_jit_equals_no_jit(tiny, tiny_run):
    """Op by op (no jit) segment and branches equal the compiled step's (the label encoder
    is compared op by op in the default shapes test)."""
    mem, logits, (e_tra_star, e_ind_star), _ = tiny_run
    query = sl(tiny.feats, slice(1, None))
    eager = tiny.model.mask_encodings(tiny.variables, mem, query)
    np.testing.assert_allclose(eager[0], e_tra_star, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(eager[1], e_ind_star, rtol=1e-5, atol=1e-5)
    eager = tiny.model.segment(tiny.variables, mem, query, tiny.obj_valid)
    np.testing.assert_allclose(eager, logits, rtol=1e-4, atol=1e-4)


def test_object_permutation_equivariance(tiny, tiny_run):
    mem, logits, _, grads = tiny_run
    perm = np.array([1, 0])
    _, mem_p, permuted, _, grads_p = tiny.run(tiny.masks[:, perm], tiny.obj_valid[:, perm])
    np.testing.assert_allclose(permuted, logits[:, perm], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mem_p.filters, mem.filters[:, perm], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads_p[1], grads[1][:, perm], rtol=1e-4, atol=1e-9)


def test_invalid_slot_does_not_affect_valid_ones(tiny, tiny_run):
    _, logits, _, _ = tiny_run
    ov = jnp.array([[True, True], [True, False]])
    garbage = tiny.masks.at[1, 1].set(jax.random.uniform(jax.random.key(3), (T, H, W)))
    _, mem_a, got_a, _, _ = tiny.run(garbage, ov)
    np.testing.assert_array_equal(got_a[0], logits[0])
    np.testing.assert_allclose(got_a[1, 0], logits[1, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got_a[1, 1], INVALID_LOGIT)
    np.testing.assert_array_equal(mem_a.initialized, [[True, True], [True, False]])


def test_gradients_reach_every_parameter_and_the_masks(tiny, tiny_run):
    """End to end: backbone, both reduction blocks, label encoder heads, transformer,
    the learned regulariser of the learner (through the steepest-descent fit) and the decoder."""
    _, _, _, (g_params, g_mask) = jax.device_get(tiny_run)
    for path, g in jax.tree_util.tree_leaves_with_path(g_params):
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, jax.tree_util.keystr(path)
    assert set(g_params) == {
        "backbone",
        "reduce_tra",
        "reduce_ind",
        "label_encoder",
        "encoder",
        "decoder",
        "segnet",
        "learner_reg",
    }
    g_mask = g_mask[:, :, 0]
    assert np.all(np.isfinite(g_mask)) and np.abs(g_mask).max() > 0


def test_paths_init_and_registry(tiny):
    m, v = tiny.model, jax.device_get(tiny.variables)
    ((root, arch, cin),) = m.backbone_paths().values()
    assert (arch, cin) == ("resnet18", 3) and "layer4" in v["params"][root[0]]
    assert root[0] in v["batch_stats"]
    assert all(p[0] in v["params"] for p in m.decoder_paths())
    assert get_method("joint").model == "vosjax.models.joint:JOINT"
    np.testing.assert_allclose(v["params"]["learner_reg"], m.settings.learner_reg_init)
    k = v["params"]["label_encoder"]["Conv_1"]["kernel"]  # 3x3x4x8
    np.testing.assert_allclose(np.std(k), math.sqrt(1 / (9 * 4)), rtol=0.35)
    assert {x.dtype for x in jax.tree_util.tree_leaves(v)} == {np.dtype(np.float32)}


def test_config_and_input_errors(tiny, tiny_run):
    full = joint.default_config()
    assert (full.backbone, full.feature_dim, full.attn_dim, full.enc_dim) == (
        "resnet50",
        512,
        128,
        16,
    )
    assert (full.memory_frames, full.tau) == (20, 1 / 30)
    with pytest.raises(VosjaxError, match="unknown variant"):
        joint.default_config("huge")
    bad = joint.default_config(tiny=True)
    bad.learner_kernel = 2
    with pytest.raises(VosjaxError, match="odd"):
        joint.JOINT(bad)
    bad = joint.default_config(tiny=True)
    bad.label_widths = (4, 8)
    with pytest.raises(VosjaxError, match="label_widths"):
        joint.JOINT(bad)
    bad = joint.default_config(tiny=True)
    bad.tau_typo = 1.0
    with pytest.raises(VosjaxError, match="unknown model config"):
        joint.JOINT(bad)
    m, v = tiny.model, tiny.variables
    mem, _, _, _ = tiny_run
    query = sl(tiny.feats, slice(1, None))
    with pytest.raises(VosjaxError, match="frames"):
        m.encode_key(v, tiny.frames[0])
    with pytest.raises(VosjaxError, match="obj_valid"):
        m.segment(v, mem, query, jnp.ones((B, 3), bool))
    with pytest.raises(VosjaxError, match="init_memory"):
        m.memorize(
            v,
            m.init_memory(v, B, 3, (h, w)),
            tiny.frames[:, :1],
            tiny.masks[:, :, :1],
            tiny.obj_valid,
            sl(tiny.feats, slice(0, 1)),
            ALL,
        )
    with pytest.raises(VosjaxError, match="feat_shape"):
        m.memorize(
            v,
            m.init_memory(v, B, O, (h, w + 1)),
            tiny.frames[:, :1],
            tiny.masks[:, :, :1],
            tiny.obj_valid,
            sl(tiny.feats, slice(0, 1)),
            ALL,
        )
    with pytest.raises(VosjaxError, match="masks"):
        m.memorize(
            v,
            mem,
            tiny.frames[:, :1],
            tiny.masks[:, :, :2],
            tiny.obj_valid,
            sl(tiny.feats, slice(0, 1)),
            ALL,
        )
    with pytest.raises(VosjaxError, match="feats"):
        m.segment(v, mem, {"key": query["key"]}, tiny.obj_valid)


# ----------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_full_size_480x854():
    model = get_model(joint.default_config())
    rng = np.random.default_rng(0)
    frames = jnp.asarray(rng.normal(size=(1, 2, 480, 854, 3)), jnp.float32)
    masks = jnp.zeros((1, 2, 2, 480, 854)).at[:, 0, :, 100:300, 200:500].set(1.0)
    masks = masks.at[:, 1, :, 250:400, 500:800].set(1.0)
    ov = jnp.ones((1, 2), bool)
    v = model.init(jax.random.key(0), frames, masks, ov)
    feats = jax.jit(model.encode_key)(v, frames)
    mem = model.init_memory(v, 1, 2, feats["key"].shape[2:4])
    mem = jax.jit(model.memorize)(
        v, mem, frames[:, :1], masks[:, :, :1], ov, sl(feats, slice(0, 1)), jnp.ones((1,), bool)
    )
    logits = jax.jit(model.segment)(v, mem, sl(feats, slice(1, 2)), ov)
    chex.assert_shape(logits, (1, 2, 1, 480, 854))
    assert bool(jnp.all(jnp.isfinite(logits)))
    chex.assert_shape(mem.encoded, (1, 20, 30 * 54, 512))
    chex.assert_shape(mem.filters, (1, 2, 3, 3, 512, 16))


@pytest.mark.slow
def test_bfloat16_compute(tiny):
    cfg = joint.default_config(tiny=True)
    cfg.dtype = "bfloat16"
    model = get_model(cfg)
    v = tiny.variables
    feats = jax.jit(model.encode_key)(v, tiny.frames)
    assert feats["key"].dtype == jnp.bfloat16
    mem = model.init_memory(v, B, O, (h, w))
    mem = jax.jit(model.memorize)(
        v,
        mem,
        tiny.frames[:, :1],
        tiny.masks[:, :, :1],
        tiny.obj_valid,
        sl(feats, slice(0, 1)),
        ALL,
    )
    logits = jax.jit(model.segment)(v, mem, sl(feats, slice(1, None)), tiny.obj_valid)
    assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))


def test_instance_l2_norm_matches_numpy_and_authors_defaults():
    """InstanceL2Norm of the authors' code (ltr/models/layers/normalization.py) and the
    JOINT recipe values (joint_net.py optim_init_reg=0.01; train settings optim_iter=5,
    num_refinement_iter=2; joint_davis.py net_opt_iter=20, net_opt_update_iter=3)."""
    from vosjax.models.joint import instance_l2_norm

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    got = np.asarray(instance_l2_norm(jnp.asarray(x), 0.5))
    for n in range(2):
        ss = sum(float(v) ** 2 for v in x[n].reshape(-1))
        np.testing.assert_allclose(got[n], x[n] * 0.5 * np.sqrt(60 / (ss + 1e-5)), rtol=1e-5)
        np.testing.assert_allclose(np.sqrt(np.mean(got[n] ** 2)), 0.5, rtol=1e-4)
    c = joint.default_config("full")
    assert c.learner_reg_init == 0.01 and c.induction_norm == "l2"
    assert (c.learner_iters_init, c.learner_iters_update) == (20, 3)
    assert (c.train_learner_iters_init, c.train_learner_iters_update) == (5, 2)


def test_lovasz_sigmoid_fg_is_the_foreground_class_over_all_pixels():
    from vosjax import losses
    from vosjax.objectives.joint import lovasz_sigmoid_fg

    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 2, 3, 4, 5)).astype(np.float32)
    masks = (rng.uniform(size=logits.shape) < 0.3).astype(np.float32)
    valid = np.array([[True, True], [True, False]])
    got = float(lovasz_sigmoid_fg(jnp.asarray(logits), jnp.asarray(masks), jnp.asarray(valid)))
    # reference: Berman's binary Lovasz on the valid objects' pixels, flattened together
    p = 1 / (1 + np.exp(-logits[valid].reshape(-1).astype(np.float64)))
    fg = masks[valid].reshape(-1)
    err = np.abs(fg - p)
    order = np.argsort(-err, kind="stable")
    e, g = err[order], fg[order]
    inter = g.sum() - np.cumsum(g)
    union = g.sum() + np.cumsum(1 - g)
    jac = 1 - inter / union
    jac[1:] = jac[1:] - jac[:-1]
    np.testing.assert_allclose(got, float(e @ jac), rtol=1e-5)
    assert losses is not None
