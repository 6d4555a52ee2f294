"""Two streams filled together: where a stream-packed piece stops when its row has two streams.

UL2 on an encoder-decoder (objectives/ul2.py) makes pieces whose inputs : targets ratio depends
on the denoiser drawn from the piece's key (R ~9:2, X at 50% ~1:1, S any split). Cut as long as
it fits, each row's last piece fills one stream and leaves the other part empty (0.78-0.84 of
the slots on the embedded corpus). packing.stream_rows keys a row's pieces by the row's start
and their place in it, so the denoisers of the pieces still to come are known, and `balanced`
picks each piece's length from them (0.985-0.990).
"""

import numpy as np

BALANCE = 0.05   # what is left of a row may hold this share of its slots more of one stream
REROLLS = 3      # short pieces a row's last piece may put before the one that fills it



def _vec(lengths, streams):
  """A piece's lengths in the order of `streams` (the row's), as floats."""
  return np.array([float(lengths[s]) for s in streams])


def balanced(piece_lengths, later, n_max, room, stream_lengths, *, first, rest, min_piece):
  """The length of a piece on two streams: n_max (the longest that fits) or shorter.

  Both streams of a row fill when (1) what is left of the row keeps about the ratio of the
  streams' lengths: a piece grows only while the surplus of one stream in what it leaves
  (inputs - ratio x targets) stays within BALANCE of the row's slots, or while it shrinks; one
  that would only grow it is cut at min_piece tokens, and the rest of its document is the next
  piece, with the next key's denoiser; and (2) the last piece (the one the row's room cuts)
  stops where a piece after it (the next, or one after up to REROLLS short ones) fills both
  streams from the rest of its document (`_completion`).
  """
  streams = tuple(room)
  space = np.array([float(room[s]) for s in streams])
  ratio = stream_lengths[streams[0]] / stream_lengths[streams[1]]
  band = BALANCE * sum(stream_lengths.values())
  lo = min(min_piece, rest)
  def surplus(n):
    left = space - _vec(piece_lengths(n, first=first, last=n == rest), streams)
    return left[0] - ratio * left[1]
  if n_max < rest:
    n = _completion(piece_lengths, later, n_max, space, streams, first=first, rest=rest, lo=lo)
    if n is not None:
      return n
  if n_max <= lo or abs(surplus(n_max)) <= band:
    return n_max
  s_lo = surplus(lo)
  if abs(s_lo) > band and abs(surplus(lo + 1)) >= abs(s_lo):
    return lo             # it only pulls further away: a short piece, the rest gets a new key
  def inside(n):          # within the band, or not yet as far out as it started
    s = surplus(n)
    return abs(s) <= band or (s * s_lo > 0 and abs(s) <= abs(s_lo))
  good, bad = lo, n_max
  while bad - good > 1:
    mid = (good + bad) // 2
    good, bad = (mid, bad) if inside(mid) else (good, mid)
  return good


def _completion(piece_lengths, later, n_max, space, streams, *, first, rest, lo):
  """The n at which this piece, k - 1 short pieces (lo tokens) and piece k cut from the rest
  of the document fill both streams, for the first k in 1..REROLLS + 1 where one exists; None
  where none does. Piece k's lengths grow about linearly in its tokens: a line from its lengths
  at lo tokens, and n is found where what is left crosses it (bisection)."""
  for k in range(1, REROLLS + 2):
    sizes = later(k)
    start = _vec(sizes(lo, first=False, last=False), streams)
    probe = max(rest, lo + 16)
    slope = (_vec(sizes(probe, first=False, last=True), streams) - start) / (probe - lo)
    shorts = sum((_vec(later(i)(lo, first=False, last=False), streams) for i in range(1, k)),
                 np.zeros(2))
    def gap(n, shorts=shorts, start=start):
      return space - _vec(piece_lengths(n, first=first, last=False), streams) - shorts - start
    top = min(n_max, rest - k * lo)
    if top < lo:
      return None
    def side(n, slope=slope, gap=gap):
      return _cross(gap(n), slope)
    n = _crossing(side, lo, top)
    if n is None:
      continue
    g = gap(n)
    t = lo + (g @ slope) / max(slope @ slope, 1e-9)
    if (g >= 0).all() and t <= rest - n - (k - 1) * lo:
      return n
  return None


def _cross(u, v):
  return u[0] * v[1] - u[1] * v[0]


def _crossing(f, lo, hi):
  """The last n in lo..hi before f changes sign (f monotone in n), or None if it does not."""
  f_lo, f_hi = f(lo), f(hi)
  if f_lo == 0:
    return lo
  if f_lo * f_hi > 0:
    return None
  good, bad = lo, hi
  while bad - good > 1:
    mid = (good + bad) // 2
    good, bad = (mid, bad) if f(mid) * f_lo > 0 else (good, mid)
  return good
