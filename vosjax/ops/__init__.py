"""Pure array kernels: no Flax, no state, no I/O.

Every function here takes arrays and returns arrays, is jit- and vmap-able, and
is differentiable where that makes sense.
"""
