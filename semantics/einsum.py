"""Einsum's meaning for the float types whose results are compared to the last bit
(float16, bfloat16): an explicit definition that does not depend on numpy's choice of
contraction path.

onnx's reference runs `np.einsum(..., optimize=True)`, whose float16 result depends on
the path numpy picks: with three operands (`,iju,->i`) it contracts two of them first
and rounds that intermediate to float16 before multiplying by the third, and its inner
loops may round the running sum to float16 after each addition or keep it in float32,
depending on strides. Here, instead, every output element is

    sum over the summed labels (row-major, in the order the labels first appear in the
    operands, ellipsis axes where the ellipsis is) of the product of the operands'
    elements (left to right), each element converted to float64, the sum accumulated in
    float64 in that order from +0.0,

rounded once to float16 (numpy's float64 -> float16 cast), or to float32 then bfloat16
for bfloat16 (the reference computes bfloat16 in float32). The C target's `onnx_einsum`
step is this loop nest.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from numpy.lib.stride_tricks import as_strided

EXPLICIT = (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))
"""The element types whose Einsum is defined here (the others are the reference's)."""

_CHUNK = 1 << 20
"""At most this many products (output elements times summed positions) at a time."""


def parse_einsum(equation: str, shapes: list[tuple[int, ...]]
                 ) -> tuple[list[list[str]], list[str], dict[str, int]]:
    """The equation's operands and output as lists of labels (the ellipsis expanded into
    labels of its own, numbered, broadcast as numpy does), and each label's extent; the
    implicit output (no '->') is numpy's: the ellipsis, then the labels used once, sorted.
    Raises ValueError on an equation that does not fit the shapes."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"{len(terms)} operand terms for {len(shapes)} operands")
    ellipsis_rank = 0
    parsed = []
    for term, shape in zip(terms, shapes):
        head, dots, tail = term.partition("...")
        letters = list(head) + list(tail)
        if not all(c.isalpha() for c in letters) or "." in tail:
            raise ValueError(f"term '{term}' is not letters around at most one ellipsis")
        extra = len(shape) - len(letters)
        if extra < 0 or (extra and not dots):
            raise ValueError(f"term '{term}' does not fit an operand of rank {len(shape)}")
        parsed.append((list(head), extra if dots else None, list(tail)))
        ellipsis_rank = max(ellipsis_rank, extra if dots else 0)
    dots_labels = [f"...{n}" for n in range(ellipsis_rank)]
    ops_labels = []
    for head, extra, tail in parsed:
        middle = dots_labels[ellipsis_rank - extra:] if extra is not None else []
        ops_labels.append(head + middle + tail)
    extents: dict[str, int] = {}
    for labels, shape in zip(ops_labels, shapes):
        for label, n in zip(labels, shape):
            if label.startswith("...") and n == 1:
                extents.setdefault(label, 1)
                continue
            if extents.get(label, n) not in (n, 1) or (
                    not label.startswith("...") and extents.get(label, n) != n):
                raise ValueError(f"label '{label}' has extents {extents[label]} and {n}")
            extents[label] = n
    if arrow:
        head, dots, tail = rhs.partition("...")
        if not all(c.isalpha() for c in head + tail) or "." in tail:
            raise ValueError(f"output '{rhs}' is not letters around at most one ellipsis")
        out = list(head) + (dots_labels if dots else []) + list(tail)
        if len(set(out)) != len(out) or any(label not in extents for label in out):
            raise ValueError(f"output '{rhs}' repeats a label or has one no operand has")
        if not dots and dots_labels and any(extents[d] != 1 for d in dots_labels):
            raise ValueError("the output drops the ellipsis")
    else:
        counts: dict[str, int] = {}
        for labels in ops_labels:
            for label in labels:
                if not label.startswith("..."):
                    counts[label] = counts.get(label, 0) + 1
        out = dots_labels + sorted(c for c, n in counts.items() if n == 1)
    return ops_labels, out, extents


def label_strides(labels: list[str], shape: tuple[int, ...], extents: dict[str, int],
                  order: list[str]) -> list[int]:
    """The element strides of an operand (C order, `labels` over `shape`) along each
    label of `order`: 0 where it lacks the label or broadcasts it (extent 1 against a
    larger one), summed over a repeated label (its diagonal)."""
    st = dict.fromkeys(order, 0)
    step = 1
    steps = []
    for n in reversed(shape):
        steps.append(step)
        step *= n
    for label, n, s in zip(labels, shape, reversed(steps)):
        if n != 1 or extents[label] == 1:
            st[label] += s
    return [st[label] for label in order]


def einsum(equation: str, arrays: list[np.ndarray]) -> np.ndarray:
    """`equation` over `arrays` (all of one type of EXPLICIT) as the module defines it."""
    dtype = arrays[0].dtype
    ops_labels, out, extents = parse_einsum(equation, [a.shape for a in arrays])
    summed = [label for label in extents if label not in out]
    order = out + summed
    out_shape = tuple(extents[label] for label in out)
    count = int(np.prod([extents[label] for label in summed], dtype=np.int64))
    views = []
    for labels, array in zip(ops_labels, arrays):
        wide = np.ascontiguousarray(array, dtype=np.float64)
        st = label_strides(labels, array.shape, extents, order)
        view = as_strided(wide, [extents[label] for label in order],
                          [s * wide.itemsize for s in st], writeable=False)
        views.append(view.reshape(*out_shape, count))
    acc = np.zeros(out_shape, dtype=np.float64)
    size = max(int(np.prod(out_shape, dtype=np.int64)), 1)
    chunk = max(_CHUNK // size, 1)
    for start in range(0, count, chunk):
        products = views[0][..., start:start + chunk]
        for view in views[1:]:
            products = products * view[..., start:start + chunk]
        # add.accumulate adds in order, each partial sum from the one before
        acc = np.add.accumulate(np.concatenate([acc[..., None], products], axis=-1),
                                axis=-1)[..., -1]
    with np.errstate(over="ignore"):  # past the type's range: inf, as the cast gives
        if dtype == np.dtype(ml_dtypes.bfloat16):
            return acc.astype(np.float32).astype(dtype)
        return acc.astype(dtype)
