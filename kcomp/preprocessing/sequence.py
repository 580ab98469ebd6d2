"""pad_sequences with Keras's semantics."""

import numpy as np

from kcomp.errors import ArgumentError


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre", value=0.0):
    """Lists of ids -> a (len(sequences), maxlen) array.

    padding / truncating: "pre" pads or cuts at the start, "post" at the end.
    maxlen defaults to the longest sequence.
    """
    for name, v in (("padding", padding), ("truncating", truncating)):
        if v not in ("pre", "post"):
            raise ArgumentError(f"Received: {name}={v!r}. Expected 'pre' or 'post'.")
    if maxlen is not None and (isinstance(maxlen, bool) or not isinstance(maxlen, (int, np.integer)) or maxlen < 0):
        raise ArgumentError(f"Received: maxlen={maxlen!r}. Expected None or an integer >= 0.")
    try:
        seqs = [np.asarray(s) for s in sequences]
    except TypeError:
        raise ArgumentError("pad_sequences takes a list of sequences (lists or arrays of ids).") from None
    for i, s in enumerate(seqs):
        if s.ndim == 0:
            raise ArgumentError(f"pad_sequences: sequence {i} is a scalar ({s!r}); each entry must be a list of ids.")
    if maxlen is None:
        maxlen = max((len(s) for s in seqs), default=0)
    sample_shape = next((s.shape[1:] for s in seqs if len(s)), ())
    out = np.full((len(seqs), maxlen, *sample_shape), value, dtype=dtype)
    for i, s in enumerate(seqs):
        if not len(s) or maxlen == 0:
            continue
        s = s[-maxlen:] if truncating == "pre" else s[:maxlen]
        if padding == "post":
            out[i, : len(s)] = s
        else:
            out[i, maxlen - len(s) :] = s
    return out
