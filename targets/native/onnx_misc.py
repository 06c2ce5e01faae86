"""Native rules for the generic ONNX ops that fit no other family: Dropout in training
mode (seeded: the reference draws its mask from numpy's RandomState(seed)), DFT, STFT,
NonMaxSuppression, TfIdfVectorizer, NonZero, Unique and Det.
"""

from __future__ import annotations

import numpy as np

from q35c.targets.native.onnx_node import lowers
from q35c.targets.native.onnx_tensor import _error, _ins, _results, _step, attributes, operands


def lower_training_dropout(lowering, op) -> None:
    """Dropout whose training_mode operand is true or known only at run time (the rule of
    targets/native/onnx_tensor.py hands it here): with a `seed`, the reference's mask
    `RandomState(seed).uniform(0, 1, shape) >= ratio` (MT19937 and numpy's 53-bit doubles,
    runtime/q35rt_misc.c) and `mask * x * (1 / (1 - ratio))`; without one the mask is
    random, so the node is refused."""
    seed = attributes(op).get("seed")
    if seed is None:
        raise _error(lowering, op, "training mode without a seed is not supported (its "
                                   "mask is random)")
    given = operands(op)
    x = _ins(lowering, op, [given[0]])[0]
    rest = _ins(lowering, op, [given[s] for s in (1, 2) if s in given])
    _, out_slots = op.slots()
    outs = _results(lowering, op)
    if int(seed) < 0 or int(seed) > 0xFFFFFFFF:
        raise _error(lowering, op, f"seed {seed} is out of range (numpy's RandomState)")
    _step(lowering, op, "onnx_dropout_train", outs, [x, *rest], {
        "seed": int(seed), "out_slots": out_slots,
        "in_slots": [s for s in (1, 2) if s in given], "x_type": str(np.dtype(x.dtype))})


@lowers("DFT")
def lower_dft(lowering, op) -> None:
    """The discrete Fourier transform along one axis (forward, inverse, one-sided, or a
    one-sided inverse: numpy's fft / ifft / rfft-like slice / irfft), as the reference
    computes it; the axis (opset 20: an operand) and dft_length may be read at run time,
    the output's static shape must then agree (the run fails otherwise)."""
    attrs = attributes(op)
    given = operands(op)
    x = _ins(lowering, op, [given[0]])[0]
    [out] = _results(lowering, op)
    rest = {s: _ins(lowering, op, [given[s]])[0] for s in (1, 2) if s in given}
    params = {"shape": list(x.shape), "out_shape": list(out.shape),
              "inverse": bool(attrs.get("inverse", 0)),
              "onesided": bool(attrs.get("onesided", 0)), "in_slots": sorted(rest),
              "axis": int(attrs.get("axis", 1 if op.opset.value.data < 20 else -2))}
    if x.shape[-1] not in (1, 2) or out.shape[-1] not in (1, 2):
        raise _error(lowering, op, "the last axis must hold a real or complex value (1 or 2)")
    _step(lowering, op, "onnx_dft", [out], [x, *(rest[s] for s in sorted(rest))], params)


@lowers("NonMaxSuppression")
def lower_nms(lowering, op) -> None:
    """Per batch and class, the reference's greedy selection (scores above the threshold,
    highest first, ties by lower index, dropped when their IoU with a selected box exceeds
    the threshold, at most max_output_boxes_per_class), in float32 as the reference's
    numpy scalars compute; the number selected must be the output's static extent (the
    run fails otherwise)."""
    given = operands(op)
    if 2 not in given:
        raise _error(lowering, op, "max_output_boxes_per_class is required")
    boxes, scores = _ins(lowering, op, [given[0], given[1]])
    rest = {s: _ins(lowering, op, [given[s]])[0] for s in (2, 3, 4) if s in given}
    [out] = _results(lowering, op)
    if boxes.dtype != np.float32 or scores.dtype != np.float32:
        raise _error(lowering, op, "boxes and scores must be float32")
    n = boxes.shape[1]
    scratch = lowering.new("arena", np.dtype(np.int64), (2 * n,), "nms")
    _step(lowering, op, "onnx_nms", [out, scratch],
          [boxes, scores, *(rest[s] for s in sorted(rest))],
          {"batches": boxes.shape[0], "classes": scores.shape[1], "boxes": n,
           "center": int(attributes(op).get("center_point_box", 0)),
           "in_slots": sorted(rest), "selected": out.shape[0]})


def _ngram_trie(pool: list[int], counts: list[int], lo: int, hi: int
                ) -> tuple[list[list[tuple[int, int]]], list[int]]:
    """The reference's n-gram trie of TfIdfVectorizer (onnx.reference's populate_grams),
    flattened: for each node, its (key, child node) pairs, and each node's n-gram id (0:
    none). Node 0 is the root."""
    children: list[dict[int, int]] = [{}]
    ids = [0]
    ngram_id, size = 1, 1
    for i, start in enumerate(counts):
        end = counts[i + 1] if i + 1 < len(counts) else len(pool)
        items = end - start
        if items > 0:
            ngrams = items // size
            if lo <= size <= hi:
                at = start
                for _ in range(ngrams):
                    node, n = 0, 1
                    while at < len(pool):
                        key = int(pool[at])
                        if key not in children[node]:
                            children[node][key] = len(ids)
                            children.append({})
                            ids.append(0)
                        child = children[node][key]
                        at += 1
                        if n == size:
                            ids[child] = ngram_id
                            ngram_id += 1
                            break
                        node, n = child, n + 1
            else:
                ngram_id += ngrams
        size += 1
    return [list(c.items()) for c in children], ids


@lowers("TfIdfVectorizer")
def lower_tfidf(lowering, op) -> None:
    """The reference's n-gram counting (skips, minimum and maximum lengths) over an int32 /
    int64 input of one or two dims, then TF, IDF or TFIDF weighting; the trie of the
    pool's n-grams is built now and becomes tables of the step."""
    attrs = attributes(op)
    [x] = _ins(lowering, op, op.inputs[:1])
    [out] = _results(lowering, op)
    if x.dtype.kind != "i" or len(x.shape) not in (1, 2):
        raise _error(lowering, op, "the input must be int32 or int64 of rank 1 or 2")
    if not attrs.get("pool_int64s"):
        raise _error(lowering, op, "only pool_int64s is supported")
    lo, hi = int(attrs["min_gram_length"]), int(attrs["max_gram_length"])
    children, ids = _ngram_trie(list(attrs["pool_int64s"]), list(attrs["ngram_counts"]),
                                lo, hi)
    indexes = [int(v) for v in attrs["ngram_indexes"]]
    rows, cols = (1, x.shape[0]) if len(x.shape) == 1 else x.shape
    scratch = lowering.new("arena", np.dtype(np.int64), (rows * (max(indexes) + 1),), "tfidf")
    _step(lowering, op, "onnx_tfidf", [out, scratch], [x], {
        "children": children, "ids": ids, "indexes": indexes, "rows": rows, "cols": cols,
        "min": lo, "max": hi, "skip": int(attrs["max_skip_count"]), "mode": attrs["mode"],
        "weights": [float(w) for w in attrs.get("weights") or []]})


@lowers("NonZero")
def lower_nonzero(lowering, op) -> None:
    """numpy's nonzero: the indices of the non-zero elements in row-major order, one row
    per axis; their count must be the output's static extent (the run fails otherwise)."""
    [x] = _ins(lowering, op, op.inputs[:1])
    [out] = _results(lowering, op)
    if not x.shape:
        raise _error(lowering, op, "a scalar input is not supported")
    _step(lowering, op, "onnx_nonzero", [out], [x], {"shape": list(x.shape),
                                                    "count": out.shape[1]})


@lowers("STFT")
def lower_stft(lowering, op) -> None:
    """The reference's short-time Fourier transform: frames of the signal every frame_step
    (zero-padded at the end), times the window (ones by default), each transformed like
    DFT (one-sided by default); frame_step and frame_length are read at run time and the
    output's static shape must agree with them (the run fails otherwise)."""
    given = operands(op)
    x, step = _ins(lowering, op, [given[0], given[1]])
    rest = {s: _ins(lowering, op, [given[s]])[0] for s in (2, 3) if s in given}
    [out] = _results(lowering, op)
    if len(x.shape) != 3 or x.shape[-1] not in (1, 2):
        raise _error(lowering, op, "the signal must be [batch, length, 1 or 2]")
    _step(lowering, op, "onnx_stft", [out], [x, step, *(rest[s] for s in sorted(rest))], {
        "in_slots": sorted(rest), "onesided": bool(attributes(op).get("onesided", 1)),
        "out_shape": list(out.shape)})


@lowers("Det")
def lower_det(lowering, op) -> None:
    """The determinant of each trailing square matrix, by LU with partial pivoting in
    double (numpy's is LAPACK's LU in the data's type: within the float path's
    tolerance)."""
    [x] = _ins(lowering, op, op.inputs[:1])
    [out] = _results(lowering, op)
    if len(x.shape) < 2 or x.shape[-1] != x.shape[-2] or x.dtype.kind != "f":
        raise _error(lowering, op, "the input must be float square matrices")
    n = x.shape[-1]
    scratch = lowering.new("arena", np.dtype(np.float64), (n * n,), "det")
    _step(lowering, op, "onnx_det", [out, scratch], [x], {"n": n})


@lowers("Unique")
def lower_unique(lowering, op) -> None:
    """The reference's numpy.unique (with return_index, return_inverse, return_counts), of
    any element type: every element (or, with `axis`, every slice along it, flattened) is
    loaded into an 8-byte sort key (double for the float types, int64 or uint64 for the
    integers and bool), the keys are sorted stably (NaN last, as numpy), equal runs become
    one unique value (NaNs one value without an axis for numpy's float16/32/64: numpy's
    equal_nan), and with sorted=0 the groups are put in first-occurrence order and Y is
    `take(x, indices, axis=0)`, as the reference does. The number of unique values must be
    the compiled extent of the declared outputs (the run fails otherwise)."""
    [x] = _ins(lowering, op, op.inputs[:1])
    _, out_slots = op.slots()
    outs = dict(zip(out_slots, _results(lowering, op)))
    attrs = attributes(op)
    shape, rank = tuple(x.shape), len(x.shape)
    keep_sorted = bool(attrs.get("sorted", 1)) or len(op.node_proto().output) == 1
    axis = attrs.get("axis")
    if axis is not None and not -rank <= int(axis) < rank:
        raise _error(lowering, op, f"axis {axis} is out of range for rank {rank}")
    if axis is None:
        length, outer, inner = x.size, 1, 1
    else:
        axis = int(axis) % rank
        length = shape[axis]
        outer = int(np.prod(shape[:axis], dtype=np.int64))
        inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    y = outs[0]
    if not keep_sorted:  # Y = take(x, indices, axis=0), whatever the axis
        if not shape:
            raise _error(lowering, op, "sorted=0 of a scalar is not supported")
        count = y.shape[0] if y.shape else -1
        want = (count, *shape[1:])
        take = (1, shape[0], int(np.prod(shape[1:], dtype=np.int64)))
    else:
        where = 0 if axis is None else axis
        count = y.shape[where] if len(y.shape) > where else -1
        want = (count,) if axis is None else (*shape[:axis], count, *shape[axis + 1:])
        take = (outer, length, inner)
    declared = {1: (count,), 2: (length,), 3: (count,)}
    if count < 0 or tuple(y.shape) != want or any(
            tuple(outs[s].shape) != declared[s] for s in outs if s):
        raise _error(lowering, op, f"the declared output shapes do not fit an input of "
                                   f"shape {list(shape)}")
    name = str(x.dtype)  # ml_dtypes' types (bfloat16, float8, int4...) are of kind V
    key = (np.float64 if x.dtype.kind == "f" or "float" in name
           else np.uint64 if x.dtype.kind in "bu" or name.startswith("uint") else np.int64)
    keys = lowering.new("arena", np.dtype(key), (length * outer * inner,), "keys")
    scratch = [lowering.new("arena", np.dtype(np.int64), (length,), name)
               for name in ("perm", "tmp", "first", "inverse", "counts")]
    _step(lowering, op, "onnx_unique", [*(outs[s] for s in sorted(outs)), keys, *scratch],
          [x], {"out_slots": sorted(outs), "length": length, "outer": outer, "inner": inner,
                "count": count, "sorted": keep_sorted, "take": list(take),
                "nan_equal": axis is None and x.dtype.kind == "f"})
