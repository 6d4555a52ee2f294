"""Pallas splash attention (TPU) for every mask the attention kernel builds.

  out_BTNH = splash.attend(q_BTNH, k_BSKH, v_BSKH, structure, scale=..., interpret=False)

`structure` is what attention.py builds its mask from (segment ids, positions, causal, prefix),
mapped onto splash's own terms:
  causal, no prefix     a static causal mask (by index) and the segment ids: within a packed
                        example positions rise by one per token, so "key index <= query index"
                        and "key position <= query position" agree there, and segment ids keep
                        examples apart
  bidirectional, cross  a static full mask and the segment ids (queries of segment s attend to
                        keys of segment s: the packed encoder's outputs for the decoder's example)
  prefix LM             the mask varies with each row's prefix: a dynamic [1, T, S] boolean mask
                        per row (the size of the mask the XLA path builds), blocks still skipped
                        where it is all False
Padding (segment 0) attends to padding in splash where the XLA path attends to nothing; both
give outputs there that no loss reads, and no real token attends to padding in either.

Under a mesh the kernel runs per device through `shard_map`, the batch and heads split as the
logical rules place them: the trainer traces its steps inside `layout(mesh, batch, heads)`.
Off TPU the kernel runs in Pallas interpret mode (the numerics tests; slow).
"""

import contextlib
import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P


def _sa():
  """jax's splash attention package, imported when a kernel is first built (Pallas is not
  loaded by a run that never asks for it)."""
  from jax.experimental.pallas.ops.tpu import splash_attention  # pylint: disable=import-outside-toplevel
  return splash_attention

BLOCK = 128   # splash's default block (TPU lanes)
_LAYOUT = []  # (mesh, batch axes, head axes) while a step is traced under a mesh


@contextlib.contextmanager
def layout(mesh, batch, heads):
  """Trace attention inside this block as shard_map'd over `batch` and `heads` mesh axes."""
  _LAYOUT.append((mesh, batch, heads))
  try:
    yield
  finally:
    _LAYOUT.pop()


def block(length):
  """The kernel's block along a sequence of `length` (None when splash cannot tile it: with
  segment ids its TPU kernels take blocks of a multiple of 128 along queries and keys)."""
  return BLOCK if length % BLOCK == 0 else None


def unsupported(lengths):
  """Why splash cannot run sequences of these lengths ('' when it can)."""
  bad = [n for n in lengths if block(n) is None]
  return (f'sequence length {bad[0]} is not a multiple of {BLOCK} (splash tiles sequences in '
          f'blocks of {BLOCK})') if bad else ''


def _kernel(mask, heads, mqa, interpret, t, s):
  sa = _sa()
  sizes = sa.BlockSizes(block_q=block(t), block_kv=block(s), block_kv_compute=block(s),
                        block_q_dkv=block(t), block_kv_dkv=block(s),
                        block_kv_dkv_compute=block(s), block_q_dq=block(t), block_kv_dq=block(s))
  make = sa.make_splash_mqa if mqa else sa.make_splash_mha
  if not isinstance(mask, jax.Array):
    mask = sa.MultiHeadMask([mask] * heads)
    return make(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)
  kernel = make(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)
  # make_splash_* turns every MaskInfo field into an array, the is_dynamic_mask flag too,
  # which under jit is a tracer the kernel then branches on: put the flag back as a bool.
  for name in ('fwd_mask_info', 'dq_mask_info', 'dkv_mask_info'):
    info = getattr(kernel, name)
    if info is not None:
      setattr(kernel, name, info._replace(is_dynamic_mask=True))
  return kernel


def _row(q_NTH, k_KSH, v_KSH, seg_q, seg_kv, prefix_q, prefix_kv, *, causal, interpret):
  """One batch row: [N, T, H] queries over [K, S, H] keys/values."""
  sa = _sa()
  (n, t, _), (kv_heads, s, _) = q_NTH.shape, k_KSH.shape
  groups = n // kv_heads
  if prefix_q is not None:
    allowed = (seg_q[:, None] == seg_kv[None, :]) & (
        (jnp.arange(s)[None, :] <= jnp.arange(t)[:, None]) |
        (prefix_q[:, None].astype(bool) & prefix_kv[None, :].astype(bool)))
    mask, segments = allowed[None], None
  else:
    mask = sa.CausalMask((t, s)) if causal else sa.FullMask((t, s))
    segments = sa.SegmentIds(seg_q, seg_kv)
  if groups == 1:
    return _kernel(mask, n, False, interpret, t, s)(q_NTH, k_KSH, v_KSH, segment_ids=segments)
  kernel = _kernel(mask, groups, True, interpret, t, s)   # one kv head per group of queries
  q_KGTH = q_NTH.reshape(kv_heads, groups, t, -1)
  out = jax.vmap(lambda q, k, v: kernel(q, k, v, segment_ids=segments))(q_KGTH, k_KSH, v_KSH)
  return out.reshape(n, t, -1)


def attend(q_BTNH, k_BSKH, v_BSKH, structure, *, scale, interpret=False):
  """Splash attention of `structure` (attention.Structure); out [B, T, N, H] in q's dtype."""
  why = unsupported((q_BTNH.shape[1], k_BSKH.shape[1]))
  if why:
    raise ValueError(f'splash attention: {why}')
  st = structure
  prefix = st.causal and st.q_prefix is not None
  q_BNTH = jnp.swapaxes(q_BTNH * jnp.asarray(scale, q_BTNH.dtype), 1, 2)
  k_BKSH, v_BKSH = jnp.swapaxes(k_BSKH, 1, 2), jnp.swapaxes(v_BSKH, 1, 2)
  args = [q_BNTH, k_BKSH, v_BKSH, st.q_segment_ids.astype(jnp.int32),
          st.kv_segment_ids.astype(jnp.int32)]
  args += [st.q_prefix, st.kv_prefix] if prefix else []
  row = functools.partial(_row, causal=st.causal, interpret=interpret)
  batched = jax.vmap(lambda *a: row(*a[:5], *(a[5:] or (None, None))))
  if _LAYOUT:
    mesh, batch, heads = _LAYOUT[-1]
    heads_spec, rows = P(batch, heads, None, None), P(batch, None)
    specs = (heads_spec, heads_spec, heads_spec, rows, rows) + ((rows, rows) if prefix else ())
    batched = jax.shard_map(batched, mesh=mesh, in_specs=specs, out_specs=heads_spec,
                            check_vma=False)
  return jnp.swapaxes(batched(*args), 1, 2).astype(q_BTNH.dtype)
