"""The backend-tuned kernels and their plain twins, one set chosen by `model.kernels`.

'tuned' (the default): custom VJPs that give autodiff's numbers with the product orders and
temporaries XLA:CPU runs fastest (README "Speed" has the measurements); the dense and tied-logits
gradients sit behind `optimization_barrier`s that keep XLA from folding them back.
'plain': the same functions by plain autodiff (jax.nn.gelu, dot_general, x @ table.T, a
logsumexp cross-entropy), so on an accelerator `--config.model.kernels=plain` shows what the
barriers cost in fusion and speed. tests/models/test_kernels.py holds each pair equal.

  gelu(x)                                  the exact (erf) GELU
  dense_dot(x, kernel, n_in)               x's trailing n_in dims contracted with kernel's leading
  tied_logits(x_BLD, table_VD)             x . table^T
  biased_tied_logits(x_BLD, table_VD, b)   float32 (x . table^T) + b
  token_xent(logits, labels, keep)         per position: (cross-entropy, log Z, argmax == label)
"""

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


@jax.custom_vjp
def gelu(x):
  """x * Phi(x); the VJP recomputes Phi and phi from x instead of keeping erf's derivative."""
  return jax.nn.gelu(x, approximate=False)


def _gelu_fwd(x):
  return gelu(x), x


def _gelu_bwd(x, g):
  cdf = 0.5 * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))
  pdf = jnp.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))
  return (g * (cdf + x * pdf).astype(g.dtype),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


def _dense_dims(x, n_in):
  return ((tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in))), ((), ()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def dense_dot(x, kernel, n_in):
  """x [..., *in] . kernel [*in, *out] -> [..., *out]; the VJP takes the kernel's gradient as one
  2-D product over the flattened rows, in the order XLA:CPU runs fast, behind a barrier."""
  return jax.lax.dot_general(x, kernel, _dense_dims(x, n_in))


def _dense_dot_fwd(x, kernel, n_in):
  return dense_dot(x, kernel, n_in), (x, kernel)


def _dense_dot_bwd(n_in, residuals, g):
  x, kernel = residuals
  n_out = kernel.ndim - n_in
  dx = jax.lax.dot_general(g, kernel, ((tuple(range(g.ndim - n_out, g.ndim)),
                                        tuple(range(n_in, kernel.ndim))), ((), ())))
  rows = math.prod(x.shape[:x.ndim - n_in])
  x2 = x.reshape(rows, -1)
  g2 = g.reshape(rows, -1)
  if x2.shape[1] > g2.shape[1]:   # the [out, in] product, then a transpose of the small result
    dk = jax.lax.optimization_barrier(jax.lax.dot_general(g2, x2, (((0,), (0,)), ((), ())))).T
  else:
    dk = jax.lax.optimization_barrier(jax.lax.dot_general(x2, g2, (((0,), (0,)), ((), ()))))
  return dx, dk.reshape(kernel.shape)


dense_dot.defvjp(_dense_dot_fwd, _dense_dot_bwd)


def tied_logits(x_BLD, table_VD):
  """x . table^T as `dense_dot` with a [D, V] kernel: the table's gradient is a [D, V] product
  then a small transpose, never a copy of the [B*L, V] logit gradient into [V, B*L] order."""
  return dense_dot(x_BLD, table_VD.T, 1)


@jax.custom_vjp
def _add_bias(logits, bias_V):
  return logits + bias_V


def _add_bias_fwd(logits, bias_V):
  return _add_bias(logits, bias_V), None


def _add_bias_bwd(_, g):
  # The bias's gradient as a product with ones reads the gradient array the logits' products
  # read; a sum made XLA compute the gradient (and the softmax under it) once more inside the
  # reduction, with the exponentials written out for both.
  return g, jnp.ones((math.prod(g.shape[:-1]),), g.dtype) @ g.reshape(-1, g.shape[-1])


_add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def biased_tied_logits(x_BLD, table_VD, bias_V):
  """float32 (x . table^T) + bias (BERT's MLM decoder); the bias's gradient is a product with
  ones that reads the logits' gradient where the products read it."""
  return _add_bias(tied_logits(x_BLD, table_VD).astype(jnp.float32), bias_V)


def _masked(logits, keep):
  return jnp.where(keep[..., None], logits, 0.0)


def _is_first_max(logits, label_logit, labels):
  """argmax(logits) == labels as a boolean any, not a variadic argmax reduce (slow on XLA:CPU):
  no logit is larger than the label's, and none before the label equals it."""
  before = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1) < labels[..., None]
  beaten = jnp.where(before, logits >= label_logit[..., None], logits > label_logit[..., None])
  return ~jnp.any(beaten, axis=-1) & ~jnp.isnan(label_logit)


CHUNK_ELEMENTS = 1 << 22   # logits per chunk of token_xent's forward pass (16 MiB of float32)


def _position_terms(logits, labels, keep):
  masked = _masked(logits, keep)
  log_z = jax.nn.logsumexp(masked, axis=-1)
  label_logit = jnp.take_along_axis(masked, labels[..., None], axis=-1)[..., 0]
  return log_z - label_logit, log_z, _is_first_max(masked, label_logit, labels)


def _chunk_rows(rows, vocab):
  """Rows per chunk: the largest power of two dividing `rows` within CHUNK_ELEMENTS logits;
  `rows` (one chunk) when that would take more than 256 chunks."""
  chunk = 1
  while chunk * 2 * vocab <= CHUNK_ELEMENTS and rows % (chunk * 2) == 0:
    chunk *= 2
  return chunk if rows // chunk <= 256 else rows


@jax.custom_vjp
def token_xent(logits, labels, keep):
  """Per position: (cross-entropy, log Z, argmax == label) of float32 logits, 0 where not `keep`;
  the forward runs over chunks of positions (`jax.lax.map`), so its temporaries are one chunk,
  and the VJP writes d/dlogits = (g_xent + g_logz) * softmax - g_xent * onehot(label) in one
  pass over the logits; `correct` has no gradient."""
  shape, vocab = labels.shape, logits.shape[-1]
  rows = max(1, labels.size)
  chunk = _chunk_rows(rows, vocab)
  if chunk == rows:
    return _position_terms(logits, labels, keep)
  split = lambda x, *tail: x.reshape((rows // chunk, chunk) + tail)
  out = jax.lax.map(lambda a: _position_terms(*a),
                    (split(logits, vocab), split(labels), split(keep)))
  return tuple(o.reshape(shape) for o in out)


def _token_xent_fwd(logits, labels, keep):
  out = token_xent(logits, labels, keep)
  return out, (logits, labels, keep, out[1])


def _token_xent_bwd(residuals, cotangents):
  logits, labels, keep, log_z = residuals
  g_xent, g_logz, _ = cotangents
  probs = jnp.exp(_masked(logits, keep) - log_z[..., None])
  grad = jnp.where(keep[..., None], (g_xent + g_logz)[..., None] * probs, 0.0)
  # The label's -g_xent as a scatter onto one entry per position after the dense pass (a one-hot
  # comparison inside the pass was slower on XLA:CPU).
  rows = grad.reshape(-1, grad.shape[-1])
  minus = jnp.where(keep, -g_xent, 0.0).reshape(-1)
  rows = rows.at[jnp.arange(rows.shape[0]), labels.reshape(-1)].add(minus, mode='drop')
  return rows.reshape(grad.shape), None, None


token_xent.defvjp(_token_xent_fwd, _token_xent_bwd)


# ------------------------------------------------------------------- the plain twins


def plain_gelu(x):
  return jax.nn.gelu(x, approximate=False)


def plain_dense_dot(x, kernel, n_in):
  return jax.lax.dot_general(x, kernel, _dense_dims(x, n_in))


def plain_tied_logits(x_BLD, table_VD):
  return x_BLD @ table_VD.T


def plain_biased_tied_logits(x_BLD, table_VD, bias_V):
  return (x_BLD @ table_VD.T).astype(jnp.float32) + bias_V


def plain_token_xent(logits, labels, keep):
  masked = _masked(logits, keep)
  log_z = jax.nn.logsumexp(masked, axis=-1)
  label_logit = jnp.take_along_axis(masked, labels[..., None], axis=-1)[..., 0]
  return log_z - label_logit, log_z, jnp.argmax(masked, axis=-1) == labels


class Kernels(NamedTuple):
  """One set of the five functions above."""
  gelu: Callable
  dense_dot: Callable
  tied_logits: Callable
  biased_tied_logits: Callable
  token_xent: Callable


SETS = {
    'tuned': Kernels(gelu, dense_dot, tied_logits, biased_tied_logits, token_xent),
    'plain': Kernels(plain_gelu, plain_dense_dot, plain_tied_logits, plain_biased_tied_logits,
                     plain_token_xent),
}
KERNELS = tuple(SETS)   # the values of model.kernels


def select(name):
  """The kernel set `name` (one of KERNELS) names."""
  return SETS[name]
