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
  local window          a static window (model.local_window, every layer or an unrolled stack):
                        splash's LocalMask (left w - 1, right 0 causal or w - 1 bidirectional),
                        by index, which within a packed example is by position; a traced
                        window (scanned layers interleaving local and global) joins the
                        dynamic mask above, blocks outside the band still skipped
  soft-cap              splash's own attn_logits_soft_cap on the (pre-scaled) logits
No additive bias (T5 relative positions, ALiBi): attention.choose keeps those on the XLA path.
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


def _kernel(mask, heads, mqa, interpret, t, s, softcap):
  sa = _sa()
  sizes = sa.BlockSizes(block_q=block(t), block_kv=block(s), block_kv_compute=block(s),
                        block_q_dkv=block(t), block_kv_dkv=block(s),
                        block_kv_dkv_compute=block(s), block_q_dq=block(t), block_kv_dq=block(s))
  make = functools.partial(sa.make_splash_mqa if mqa else sa.make_splash_mha,
                           block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret,
                           attn_logits_soft_cap=softcap or None)
  if not isinstance(mask, jax.Array):
    return make(sa.MultiHeadMask([mask] * heads))
  kernel = make(mask)
  # make_splash_* turns every MaskInfo field into an array, the is_dynamic_mask flag too,
  # which under jit is a tracer the kernel then branches on: put the flag back as a bool.
  for name in ('fwd_mask_info', 'dq_mask_info', 'dkv_mask_info'):
    info = getattr(kernel, name)
    if info is not None:
      setattr(kernel, name, info._replace(is_dynamic_mask=True))
  return kernel


def _dynamic_mask(t, s, seg_q, seg_kv, prefix_q, prefix_kv, causal, window):
  """[1, T, S] booleans by index: segments, causal order (or the prefix) and the window."""
  i, j = jnp.arange(t)[:, None], jnp.arange(s)[None, :]
  allowed = seg_q[:, None] == seg_kv[None, :]
  if causal:
    order = j <= i
    if prefix_q is not None:
      order |= prefix_q[:, None].astype(bool) & prefix_kv[None, :].astype(bool)
    allowed &= order
  if window is not None:
    allowed &= (jnp.abs(i - j) < window) | (window <= 0)
  return allowed[None]


def _row(q_NTH, k_KSH, v_KSH, seg_q, seg_kv, prefix_q, prefix_kv, window, *, causal,
         static_window, softcap, interpret):
  """One batch row: [N, T, H] queries over [K, S, H] keys/values; `window` a traced window or
  None, `static_window` an int (0: none)."""
  sa = _sa()
  (n, t, _), (kv_heads, s, _) = q_NTH.shape, k_KSH.shape
  groups = n // kv_heads
  if prefix_q is not None or window is not None:
    mask = _dynamic_mask(t, s, seg_q, seg_kv, prefix_q, prefix_kv, causal,
                         window if window is not None else static_window or None)
    segments = None
  else:
    if static_window:
      w = static_window - 1
      mask = sa.LocalMask((t, s), window_size=(w, 0 if causal else w), offset=0)
    else:
      mask = sa.CausalMask((t, s)) if causal else sa.FullMask((t, s))
    segments = sa.SegmentIds(seg_q, seg_kv)
  if groups == 1:
    return _kernel(mask, n, False, interpret, t, s, softcap)(q_NTH, k_KSH, v_KSH,
                                                             segment_ids=segments)
  kernel = _kernel(mask, groups, True, interpret, t, s, softcap)   # one kv head per group
  q_KGTH = q_NTH.reshape(kv_heads, groups, t, -1)
  out = jax.vmap(lambda q, k, v: kernel(q, k, v, segment_ids=segments))(q_KGTH, k_KSH, v_KSH)
  return out.reshape(n, t, -1)


def attend(q_BTNH, k_BSKH, v_BSKH, structure, *, scale, softcap=0.0, interpret=False):
  """Splash attention of `structure` (attention.Structure); out [B, T, N, H] in q's dtype."""
  why = unsupported((q_BTNH.shape[1], k_BSKH.shape[1]))
  if why:
    raise ValueError(f'splash attention: {why}')
  st = structure
  prefix = st.causal and st.q_prefix is not None
  static = st.window is None or isinstance(st.window, int)
  q_BNTH = jnp.swapaxes(q_BTNH * jnp.asarray(scale, q_BTNH.dtype), 1, 2)
  k_BKSH, v_BKSH = jnp.swapaxes(k_BSKH, 1, 2), jnp.swapaxes(v_BSKH, 1, 2)
  args = [q_BNTH, k_BKSH, v_BKSH, st.q_segment_ids.astype(jnp.int32),
          st.kv_segment_ids.astype(jnp.int32)]
  args += [st.q_prefix, st.kv_prefix] if prefix else []
  args += [] if static else [jnp.asarray(st.window, jnp.int32)]
  row = functools.partial(_row, causal=st.causal, interpret=interpret, softcap=softcap,
                          static_window=int(st.window or 0) if static else 0)

  def per_row(*a):
    prefixes = a[5:7] if prefix else (None, None)
    return row(*a[:5], *prefixes, None if static else a[-1])
  batched = jax.vmap(per_row, in_axes=(0,) * (len(args) - (0 if static else 1)) +
                     (() if static else (None,)))
  if _LAYOUT:
    mesh, batch, heads = _LAYOUT[-1]
    heads_spec, rows = P(batch, heads, None, None), P(batch, None)
    specs = (heads_spec, heads_spec, heads_spec, rows, rows) + ((rows, rows) if prefix else ())
    specs += () if static else (P(),)
    batched = jax.shard_map(batched, mesh=mesh, in_specs=specs, out_specs=heads_spec,
                            check_vma=False)
  return jnp.swapaxes(batched(*args), 1, 2).astype(q_BTNH.dtype)
