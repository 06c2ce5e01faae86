"""The abstract interpreter of `verify-quant-error`: an interval analysis over every op of a
function that also computes the error of each quantized matmul (`analyse_function`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from xdsl.dialects import arith, func, math as xmath, tensor
from xdsl.dialects.linalg import ops as linalg
from xdsl.ir import Operation, SSAValue

from q35c.compiler.quant import LegacyPairTensor, Q3P5Tensor
from q35c.compiler.tensors import constant_value
from q35c.compiler.weights import WeightStore
from q35c.dialects import q35nn, quant3p5
from q35c.passes.quant_error.bounds import (
    Ball,
    L1Fact,
    _ball_norm,
    _Decoded,
    _l1_box_max,
    _SpectralAcc,
)
from q35c.passes.quant_error.intervals import (
    _ATTENTION,
    _ERF,
    _FUSED_MATMUL,
    _GELU_MIN,
    _GELU_TANH_MIN,
    _LIPSCHITZ,
    _SILU_MIN,
    _SWIGLU,
    QUANTIZED_MATMULS,
    SLACK,
    TINY,
    U32,
    U64,
    Box,
    _clean,
    _div,
    _gelu_erf,
    _gelu_tanh,
    _is_int,
    _matmul,
    _monotone,
    _mul,
    _out_of_memory,
    _shape,
    _silu_safe,
    _Unbounded,
    _unknown,
    _with_min,
    activation_box,
)


def _uses(op: Operation) -> tuple[SSAValue, ...]:
    """The values the analysis of `op` reads: its operands, and the float input of the
    `quantize_activations` feeding a `matmul_int8` (its reference activation)."""
    if isinstance(op, quant3p5.MatmulInt8Op) and isinstance(
            op.lhs.owner, quant3p5.QuantizeActivationsOp):
        return (*op.operands, op.lhs.owner.input)
    return tuple(op.operands)


@dataclass
class _NormTag:
    kind: str  # "ms", "rms" or "inv"
    x: SSAValue
    f: float
    rows: np.ndarray


class IntervalAnalysis:
    """Elementwise interval evaluation of one function: `boxes[value]` or packed weights."""

    def __init__(self, fn: func.FuncOp, store: WeightStore, arg_range: float,
                 input_range: float = 0.0, release: bool = False):
        """`release`: drop each value's interval after its last use (peak memory then grows
        with the live values, not the whole function), and stop after the last quantized
        matmul (what follows it bounds nothing); `env` then holds only live values."""
        self.store = store
        self.input_range = input_range
        self.env: dict[SSAValue, Any] = {}
        self.tags: dict[SSAValue, _NormTag] = {}
        self.balls: dict[SSAValue, Ball] = {}
        self.l1: dict[SSAValue, L1Fact] = {}
        self.layers: dict[Operation, LayerError] = {}
        for arg in fn.args:
            if _is_int(arg) or arg_range <= 0:
                self.env[arg] = _unknown(arg)
            else:
                self.env[arg] = Box.full(_shape(arg), -arg_range, arg_range)
        ops = list(fn.body.blocks[0].ops)
        last_use: dict[SSAValue, int] = {}
        if release:
            for i, op in enumerate(ops):
                for v in _uses(op):
                    last_use[v] = i
            matmuls = [i for i, op in enumerate(ops) if isinstance(op, QUANTIZED_MATMULS)]
            ops = ops[:matmuls[-1] + 1] if matmuls else []
        for i, op in enumerate(ops):
            if isinstance(op, func.ReturnOp):
                break
            try:
                if isinstance(op, QUANTIZED_MATMULS):
                    results = self.quantized_matmul(op)  # also records the layer's error
                else:
                    results = self.transfer(op)
            except _Unbounded:
                results = None
            except MemoryError:
                raise _out_of_memory(op) from None
            except Exception:  # an op this analysis cannot bound: unbounded, never wrong
                if isinstance(op, QUANTIZED_MATMULS):
                    raise
                results = None
            if results is None:
                try:
                    results = [_unknown(r) for r in op.results]
                except MemoryError:
                    raise _out_of_memory(op) from None
            else:
                try:
                    results = self.normalization(op, results)
                    results = self.ball_facts(op, results)
                except Exception:  # the relational rules are optional: keep the plain result
                    pass
            self.env.update(zip(op.results, results))
            if release:
                for v in (*_uses(op), *op.results):
                    if last_use.get(v, i) <= i:
                        for facts in (self.env, self.balls, self.l1):
                            facts.pop(v, None)

    # A decomposed RMSNorm, x / sqrt(mean(x * x) + eps), is unbounded for plain intervals
    # (the divisor's interval reaches sqrt(eps)). Tags track the relation instead:
    # "ms":  v = (sum_k x_k^2) / c (+ eps >= 0), so x_k^2 <= c * v for every k of its row;
    # "rms": |x_k| <= f * v;   "inv": |x_k| * v <= f.
    # `rows` holds, per element of the tagged value, the row of x it belongs to; it follows
    # the same shape ops, and the final product checks it against x's rows, so a misaligned
    # broadcast never uses the rule.

    def _point(self, value: SSAValue) -> float | None:
        v = self.env.get(value)
        if (isinstance(v, Box) and v.lo.size and np.all(v.lo == v.hi)
                and np.all(v.lo == v.lo.flat[0])):
            return float(v.lo.flat[0])
        return None

    def normalization(self, op: Operation, results: list) -> list:
        tag = self.tags.get
        if isinstance(op, linalg.ReduceOp):
            source, init = op.operands[0], op.operands[1]
            body = list(op.region.block.ops)
            sq = source.owner
            rank = len(_shape(source))
            if (len(body) == 2 and isinstance(body[0], arith.AddfOp)
                    and tuple(op.dimensions.get_values()) == (rank - 1,)
                    and isinstance(sq, arith.MulfOp) and sq.lhs is sq.rhs
                    and self._point(init) == 0.0):
                shape = _shape(op.results[0])
                rows = np.arange(int(np.prod(shape))).reshape(shape)
                self.tags[op.results[0]] = _NormTag("ms", sq.lhs, 1.0, rows)
            return results
        if isinstance(op, (tensor.ReshapeOp, tensor.CollapseShapeOp, tensor.ExpandShapeOp,
                           linalg.TransposeOp, linalg.BroadcastOp)) and tag(op.operands[0]):
            t = tag(op.operands[0])
            shape = _shape(op.results[0])
            if isinstance(op, linalg.TransposeOp):
                rows = np.transpose(t.rows, tuple(op.permutation.get_values()))
            elif isinstance(op, linalg.BroadcastOp):
                rows = np.broadcast_to(
                    np.expand_dims(t.rows, tuple(op.dimensions.get_values())), shape)
            else:
                rows = t.rows.reshape(shape)
            self.tags[op.results[0]] = _NormTag(t.kind, t.x, t.f, rows)
            return results
        if isinstance(op, (arith.DivfOp, arith.MulfOp, arith.AddfOp)):
            a, b = op.lhs, op.rhs
            if isinstance(op, (arith.MulfOp, arith.AddfOp)) and tag(b) and not tag(a):
                a, b = b, a
            ta, tb = tag(a), tag(b)
            if ta and ta.kind == "ms" and not tb:
                c = self._point(b)
                if c is not None and np.all(_shape(a) == _shape(op.result)):
                    if isinstance(op, arith.AddfOp) and c >= 0:
                        self.tags[op.result] = ta
                    elif isinstance(op, arith.DivfOp) and c > 0:
                        self.tags[op.result] = _NormTag("ms", ta.x, ta.f * c, ta.rows)
                    elif isinstance(op, arith.MulfOp) and c > 0:
                        self.tags[op.result] = _NormTag("ms", ta.x, ta.f / c, ta.rows)
                return results
            if isinstance(op, arith.DivfOp) and tb and tb.kind == "rms":
                p = self._point(a)
                if p is not None and p > 0:  # p / (rms) with |x_k| <= f * rms
                    self.tags[op.result] = _NormTag("inv", tb.x, tb.f * p, tb.rows)
                    return results
                return self._bounded(op, a, tb, results)
            if isinstance(op, arith.MulfOp) and ta and ta.kind == "inv":
                return self._bounded(op, b, ta, results)
            return results
        if isinstance(op, xmath.SqrtOp) and tag(op.operand) and tag(op.operand).kind == "ms":
            t = tag(op.operand)
            self.tags[op.result] = _NormTag("rms", t.x, math.sqrt(t.f), t.rows)
        if isinstance(op, xmath.RsqrtOp) and tag(op.operand) and tag(op.operand).kind == "ms":
            t = tag(op.operand)
            self.tags[op.result] = _NormTag("inv", t.x, math.sqrt(t.f), t.rows)
        return results

    def _bounded(self, op: Operation, x: SSAValue, t: _NormTag, results: list) -> list:
        """x * inv or x / rms with x the normalized value itself: |result| <= f."""
        shape = _shape(x)
        if x is not t.x or _shape(op.results[0]) != shape or t.rows.shape != shape:
            return results
        expected = np.arange(int(np.prod(shape[:-1]))).reshape(shape[:-1])[..., None]
        if not np.array_equal(t.rows, np.broadcast_to(expected, shape)):
            return results
        y = results[0]
        f = t.f * (1 + 2.0**-18)  # float32 rounding of the norm's own computation
        # sum_k (x_k * inv)^2 <= c * ms * inv^2 <= c: each row is also in an L2 ball.
        self.balls[op.results[0]] = Ball(np.ones(shape[-1]), f)
        return [Box(np.maximum(y.lo, -f), np.minimum(y.hi, f))]

    def ball_facts(self, op: Operation, results: list) -> list:
        """Propagate row L2 balls; a ball also bounds each coordinate: |y_k| <= R * scale_k."""
        results = self._ball_facts(op, results)
        ball = self.balls.get(op.results[0]) if op.results else None
        if ball is not None and isinstance(results[0], Box):
            y, cap = results[0], ball.radius * ball.scale
            c = 0.0 if ball.center is None else ball.center
            return [Box(np.maximum(y.lo, c - cap), np.minimum(y.hi, c + cap)), *results[1:]]
        return results

    def _ball_facts(self, op: Operation, results: list) -> list:
        balls = self.balls
        if isinstance(op, (tensor.ReshapeOp, tensor.CollapseShapeOp, tensor.ExpandShapeOp)):
            src = balls.get(op.operands[0])
            if _shape(op.operands[0])[-1:] == _shape(op.results[0])[-1:]:
                # rows are contiguous: same rows, same order
                if src:
                    balls[op.results[0]] = src
                if op.operands[0] in self.l1:
                    self.l1[op.results[0]] = self.l1[op.operands[0]]
        elif isinstance(op, arith.MulfOp) or (_SWIGLU and isinstance(op, _SWIGLU)):
            if isinstance(op, arith.MulfOp):
                a, c = (op.lhs, op.rhs) if op.lhs in balls else (op.rhs, op.lhs)
                other = self.env.get(c)
            else:  # silu(gate) * up
                a, c = op.up, op.gate
                other = _with_min(_silu_safe, self.box(op.gate), *_SILU_MIN)
            ball = balls.get(a)
            if ball and c in balls and a is not c and _shape(a) == _shape(c) == _shape(
                    op.result):
                # Both factors' rows lie in balls: sum_k |a_k c_k| <= ||a||_2 ||c||_2, and
                # |silu(g)| <= |g| (sigmoid is in [0, 1]); float32 rounding of the product
                # and of silu covered by the factor.
                self.l1[op.result] = L1Fact(
                    _ball_norm(ball) * _ball_norm(balls[c]) * (1 + 2.0**-18))
            if ball and isinstance(other, Box) and np.array_equal(other.lo, other.hi) \
                    and other.lo.shape == _shape(op.result) and a is not c:
                rows = other.lo.reshape(-1, other.lo.shape[-1])  # constant: one row for all?
                if rows.size and np.all(rows == rows[0]):
                    center = None if ball.center is None else ball.center * rows[0]
                    balls[op.result] = Ball(ball.scale * np.abs(rows[0]),
                                            ball.radius * (1 + 2.0**-20), center)
            elif ball and ball.center is None and isinstance(other, Box) \
                    and other.lo.shape == _shape(op.result) \
                    and a is not c and _shape(a) == _shape(op.result):
                # y_k = c_k * a_k: scale_k grows by max over rows of |c_k|
                amax = other.absmax().reshape(-1, other.lo.shape[-1]).max(axis=0)
                if np.all(np.isfinite(amax)):
                    balls[op.result] = Ball(ball.scale * amax, ball.radius * (1 + 2.0**-20))
        return results

    # -- quantized matmuls: interval, ball facts and error bound in one sweep ----------------

    def quantized_matmul(self, op) -> list | None:
        """The result interval of a quantized matmul; also records its `LayerError` and the
        ball its rows lie in. The weights are decoded once and processed in column chunks,
        so every temporary is O(K x chunk) (a 576 x 49152 lm_head never exists in float64)."""
        weights = self.env.get(op.weights)
        k, n = op.weights.type.get_shape()
        wop = _weight_op(op.weights)
        name = wop.weight_name.data if wop else f"<{op.weights.owner.name}>"
        if not isinstance(weights, (Q3P5Tensor, LegacyPairTensor)):
            self.layers[op] = LayerError(op, name, None, (k, n), math.inf, None, None,
                                         "weights known only at run time")
            return None
        is_int8 = isinstance(op, quant3p5.MatmulInt8Op)
        fused = bool(_FUSED_MATMUL) and isinstance(op, _FUSED_MATMUL)
        source = float_source(self.store, name, (k, n)) if wop else None
        dec = _Decoded(weights)
        out_shape = _shape(op.result)

        # The product's interval: x (the dequantized activation on the int8 path) times W.
        try:
            xp = self.dequantized_activation(op) if is_int8 else self.box(op.lhs)
            am, ar = (v.reshape(-1, k) for v in xp.mid_rad())
        except _Unbounded:
            am = ar = None
        # The ball facts: the input rows' ball, mapped through W.
        fact_ball, fact_x, plain = None, None, False
        if is_int8:
            qa = op.lhs.owner
            if isinstance(qa, quant3p5.QuantizeActivationsOp) and qa.input in self.balls:
                fact_ball, fact_x = self.balls[qa.input], self.box(qa.input)
        elif op.lhs in self.balls:
            bias = self.env.get(op.bias) if getattr(op, "bias", None) is not None else None
            plain = not fused or (op.activation.data == "none" and op.residual is None and (
                bias is None or (isinstance(bias, Box) and np.array_equal(bias.lo, bias.hi))))
            if plain:
                fact_ball = self.balls[op.lhs]
        # The error: the reference input box (and its ball / L1 facts).
        x, int8, ball = _input_box(op, self, self.input_range)
        value = op.lhs.owner.input if int8 else op.lhs
        l1 = self.l1.get(value)
        absmax = float(x.absmax().max()) if x.lo.size else 0.0
        try:
            mid, rad = x.mid_rad()
            mid2, rad2 = mid.reshape(-1, k), rad.reshape(-1, k)
        except _Unbounded:
            mid2 = rad2 = None
        cap = None
        if l1 is not None and mid2 is not None:  # per coordinate, over all rows
            cap = (np.abs(mid2) + rad2).max(axis=0)
        # Rows with the same input intervals have the same results: analyse each one once
        # (the rows of an LLM's activations usually share one box).
        inv = None
        given = [v for v in (am, ar, mid2, rad2) if v is not None]
        if given and all(v.shape[0] == given[0].shape[0] for v in given):
            seen: dict[bytes, int] = {}
            inv = np.array([seen.setdefault(row.tobytes(), len(seen)) for row in
                            np.ascontiguousarray(np.concatenate(given, axis=1))], np.intp)
            first = np.zeros(len(seen), np.intp)
            first[inv] = np.arange(len(inv))  # any row of each class: they are identical
            am, ar, mid2, rad2 = (None if v is None else v[first] for v in (am, ar, mid2, rad2))
        # The product and the error see the same x (float path, no declared range): share
        # the magnitude sum_k |x_k| |w_k|; an all-zero midpoint (a symmetric box) needs no
        # product with the weights.
        shared = not is_int8 and self.input_range <= 0 and am is not None and mid2 is not None
        zero_mid = am is not None and not am.any()

        rows_p = 0 if am is None else am.shape[0]
        pm, pr = np.zeros((rows_p, n)), np.zeros((rows_p, n))
        absam = None if am is None else np.abs(am) + ar
        if fact_ball is not None:
            fb = fact_ball
            f_colnorm, f_absc, f_cw = np.zeros(n), np.zeros(n), np.zeros(n)
            f_colabs = np.zeros(n)
            f_spec, w_spec = _SpectralAcc(k, n), _SpectralAcc(k, n)
        if mid2 is not None:
            rows_e = mid2.shape[0]
            xabs = np.abs(mid2) + rad2
            r_row = np.maximum(xabs, 0).max(axis=1, keepdims=True)  # max |x| per row
            weight_part = np.zeros((rows_e, n))
            weight_var = np.zeros((rows_e, n))
            ball_part, ball_var = np.zeros(n), np.zeros(n)
            l1_part, l1_mag = np.zeros(n), np.zeros(n)
            colabs, colsq = np.zeros(n), np.zeros(n)
            magnitude = np.zeros((rows_e, n))
            ball_mag = np.zeros(n)
            if is_int8:
                xabs8 = (xabs + r_row / 254) * (1 + 2.0**-15)
            w_float = np.asarray(self.store[source]) if source is not None else None

        for c0, c1 in dec.chunks():
            levels = dec.levels(c0, c1)
            w = dec.columns(c0, c1, is_int8, levels)
            aw = np.abs(w)
            if am is not None and not shared:
                if not zero_mid:
                    pm[:, c0:c1] = am @ w
                pr[:, c0:c1] = ar @ aw + (absam @ aw) * (k * U64 * 2)
            if fact_ball is not None:
                sw = fb.scale[:, None] * w
                f_colnorm[c0:c1] = np.sqrt((sw**2).sum(axis=0))
                f_spec.add(sw)
                del sw
                if fb.center is not None:
                    f_absc[c0:c1] = np.abs(fb.center) @ aw
                    f_cw[c0:c1] = fb.center @ w
                if is_int8:
                    f_colabs[c0:c1] = aw.sum(axis=0)
                    w_spec.add(w)
            if mid2 is not None:
                if w_float is not None:
                    e = np.asarray(w_float[:, c0:c1], np.float64) - w
                    me = np.zeros((rows_e, c1 - c0)) if zero_mid and shared else mid2 @ e
                    ae = np.abs(e)
                    weight_part[:, c0:c1] = np.abs(me) + rad2 @ ae
                    weight_var[:, c0:c1] = me**2 + (rad2**2 / 3) @ (e**2)
                    if ball is not None:
                        se2 = ((ball.scale[:, None] * e) ** 2).sum(axis=0)
                        ce = 0.0 if ball.center is None else ball.center @ e
                        ball_part[c0:c1] = np.abs(ce) + ball.radius * np.sqrt(se2)
                        ball_var[c0:c1] = ce**2 + (ball.radius**2 / k) * se2
                    if cap is not None:
                        l1_part[c0:c1] = _l1_box_max(cap, l1.total, ae)
                    del e, me, ae
                colabs[c0:c1] = aw.sum(axis=0)
                colsq[c0:c1] = (w**2).sum(axis=0)
                if is_int8:
                    magnitude[:, c0:c1] = xabs8 @ dec.spread(c0, c1, levels)
                else:
                    magnitude[:, c0:c1] = xabs @ aw
                    if shared:
                        if not zero_mid:
                            pm[:, c0:c1] = am @ w
                        pr[:, c0:c1] = rad2 @ aw + magnitude[:, c0:c1] * (k * U64 * 2)
                    if ball is not None:
                        ball_mag[c0:c1] = ball.radius * np.sqrt(
                            ((ball.scale[:, None] * aw) ** 2).sum(axis=0)) + (
                            0.0 if ball.center is None else np.abs(ball.center) @ aw)
                    if cap is not None:
                        l1_mag[c0:c1] = _l1_box_max(cap, l1.total, aw)
            del w, aw, levels

        # -- the result interval -------------------------------------------------------
        if am is None:
            y = Box.full(out_shape)
        else:
            y = _clean(pm - pr, pm + pr)
            if inv is not None:
                y = Box(y.lo[inv], y.hi[inv])
            y = Box(y.lo.reshape(out_shape), y.hi.reshape(out_shape))
        del pm, pr
        stages = None
        if fused:
            stages = self.fused_stages(op, y)
            y = stages[-1]
        if fact_ball is not None and not is_int8:
            rel = U32 + 2 * k * U64 + (U32 if getattr(op, "bias", None) is not None else 0.0)
            # ball.image(w, rel): y - center W = z diag(scale) W, ||.||_2 <= R sigma_max,
            # plus the rounding of the product (and of the bias add)
            f_mag = fb.radius * f_colnorm + f_absc
            radius = fb.radius * f_spec.bound() + rel * float(np.sqrt((f_mag**2).sum()))
            center = None if fb.center is None else f_cw
            image = Ball(np.ones(n), radius * (1 + 2.0**-20), center)
            spread = fb.radius * f_colnorm + rel * f_mag
            mid_c = np.zeros(n) if image.center is None else image.center
            if getattr(op, "bias", None) is not None:
                bias = self.env[op.bias]
                spread = spread + U32 * np.abs(bias.lo)
                mid_c = mid_c + bias.lo
                image = Ball(image.scale, image.radius + U32 * float(np.sqrt(
                    (bias.lo**2).sum())), mid_c)
            self.balls[op.result] = image
            spread = spread * (1 + 2.0**-20)
            y = Box(np.maximum(y.lo, mid_c - spread), np.minimum(y.hi, mid_c + spread))
        elif fact_ball is not None:
            r_f = fact_x.absmax().reshape(-1, k).max(axis=1, keepdims=True) * (1 + 2.0**-15)
            rel = (dec.groups + 3) * U32 / (1 - (dec.groups + 3) * U32)
            # y = (x + d) . W with |d_k| <= r / 254, plus the float32 rescale rounding
            f_bound = np.abs(f_cw) + fb.radius * f_colnorm  # fb.bound(w)
            limit = (f_bound[None, :] + r_f / 254 * f_colabs) * (1 + rel) * (1 + 2.0**-20)
            # the image ball, widened by ||d W||_2 and the rounding
            image_r = fb.radius * f_spec.bound() * (1 + 2.0**-20)
            extra = (math.sqrt(k) * float(r_f.max()) / 254 * w_spec.bound()
                     + rel * float(np.sqrt((limit**2).sum(axis=1).max())))
            self.balls[op.result] = Ball(np.ones(n), (image_r + extra) * (1 + 2.0**-20),
                                         None if fb.center is None else f_cw)
            limit = limit.reshape(y.lo.shape[:-1] + (n,))
            y = Box(np.maximum(y.lo, -limit), np.minimum(y.hi, limit))
        elif cap is not None and not fused and not int8 and am is not None:
            # rows with sum |x_k| <= total and |x_k| <= cap_k: |y_n| <= knapsack(|W[:, n]|)
            rel = U32 + 2 * k * U64
            limit = l1_mag * (1 + rel) * (1 + 2.0**-20)
            y = Box(np.maximum(y.lo, -limit), np.minimum(y.hi, limit))

        # -- the error bound -----------------------------------------------------------
        if mid2 is None:
            self.layers[op] = LayerError(op, name, source, (k, n), absmax, None, None,
                                         "input range unbounded")
            return [y]
        parts = []
        bound = np.zeros((rows_e, n))
        var = np.zeros((rows_e, n))
        if w_float is not None:
            if ball is not None:  # the input rows lie in an L2 ball too: the smaller bound
                weight_part = np.minimum(weight_part, ball_part[None, :])
                # rows spread evenly over the ball: E x_k^2 = (R scale_k)^2 / K
                weight_var = np.minimum(weight_var, ball_var[None, :])
            if cap is not None:  # sum_k |x_k| <= total (a product of two balls)
                weight_part = np.minimum(weight_part, l1_part[None, :])
            bound += weight_part
            var += weight_var
            parts.append("weights")
        if int8:
            s = r_row / 127 * (1 + 2.0**-20)
            bound += s * (0.5 + 2.0**-17) * colabs
            var += (s**2 / 12) * colsq
            parts.append("int8")
        # Rounding of the computation itself: sum_k |x_k| |w_k| times the relative error.
        if is_int8:
            rel = (dec.groups + 3) * U32 / (1 - (dec.groups + 3) * U32)
        else:
            rel = U32 + 2 * k * U64
            if ball is not None:
                magnitude = np.minimum(magnitude, ball_mag[None, :])
            if cap is not None:
                magnitude = np.minimum(magnitude, l1_mag[None, :])
        bound = bound + rel * magnitude
        parts.append("rounding")
        if inv is not None:
            bound, var = bound[inv], var[inv]
        if fused:
            # The epilogue maps both products through the same bias, activation and
            # residual: the error grows by the activation's Lipschitz constant, plus one
            # float32 rounding per step (magnitudes from the intervals). A fused residual
            # add is left out, as in the unfused graph where it is its own op: its rounding
            # scales with the residual, which may be unbounded.
            st = [v.absmax().reshape(-1, n) for v in stages]
            bound = _LIPSCHITZ[op.activation.data] * (bound + U32 * st[1]) + U32 * st[2]
            parts.append(f"epilogue({op.activation.data})")
        bound = bound * SLACK + TINY
        self.layers[op] = LayerError(op, name, source, (k, n), absmax,
                                     bound.reshape(out_shape), float(np.sqrt(var.mean())),
                                     "+".join(parts))
        return [y]

    def box(self, value: SSAValue) -> Box:
        v = self.env[value]
        if not isinstance(v, Box):
            raise _Unbounded()
        return v

    def transfer(self, op: Operation):
        b = self.box
        if isinstance(op, arith.ConstantOp):
            return [Box.point(constant_value(op.value, op.result.type))]
        if isinstance(op, quant3p5.WeightOp):
            value = self.store[op.weight_name.data]
            if isinstance(op.result.type, quant3p5.PackedWeightType):
                return [value]
            return [Box.point(np.asarray(value))]
        if isinstance(op, (arith.AddfOp, arith.AddiOp)):
            x, y = b(op.lhs), b(op.rhs)
            return [_clean(x.lo + y.lo, x.hi + y.hi)]
        if isinstance(op, (arith.SubfOp, arith.SubiOp)):
            x, y = b(op.lhs), b(op.rhs)
            return [_clean(x.lo - y.hi, x.hi - y.lo)]
        if isinstance(op, (arith.MulfOp, arith.MuliOp)):
            if op.lhs is op.rhs:  # a square is never negative
                x = b(op.lhs)
                lo = np.where((x.lo <= 0) & (x.hi >= 0), 0.0, np.minimum(x.lo**2, x.hi**2))
                return [_clean(lo, np.maximum(x.lo**2, x.hi**2))]
            return [_mul(b(op.lhs), b(op.rhs))]
        if isinstance(op, arith.DivfOp):
            return [_div(b(op.lhs), b(op.rhs))]
        if isinstance(op, arith.NegfOp):
            x = b(op.operand)
            return [Box(-x.hi, -x.lo)]
        if isinstance(op, (arith.MaximumfOp, arith.MaxSIOp)):
            x, y = b(op.lhs), b(op.rhs)
            return [Box(np.maximum(x.lo, y.lo), np.maximum(x.hi, y.hi))]
        if isinstance(op, (arith.MinimumfOp, arith.MinSIOp)):
            x, y = b(op.lhs), b(op.rhs)
            return [Box(np.minimum(x.lo, y.lo), np.minimum(x.hi, y.hi))]
        if isinstance(op, arith.SelectOp):
            x, y = b(op.lhs), b(op.rhs)
            return [Box(np.minimum(x.lo, y.lo), np.maximum(x.hi, y.hi))]
        if isinstance(op, (arith.ExtFOp, arith.TruncFOp, arith.SIToFPOp, arith.ExtSIOp)):
            return [_monotone(lambda v: v, b(op.operands[0]))]
        if isinstance(op, arith.FPToSIOp):
            return [_monotone(np.trunc, b(op.operands[0]))]
        if isinstance(op, arith.CmpfOp):
            return [Box.full(_shape(op.result), 0.0, 1.0)]
        if isinstance(op, (xmath.ExpOp, xmath.LogOp, xmath.SqrtOp, xmath.TanhOp)):
            fn = {xmath.ExpOp: np.exp, xmath.LogOp: np.log, xmath.SqrtOp: np.sqrt,
                  xmath.TanhOp: np.tanh}[type(op)]
            x = b(op.operand)
            if fn in (np.log, np.sqrt) and np.any(x.lo < 0):
                return None
            return [_monotone(fn, x)]
        if isinstance(op, xmath.RsqrtOp):
            x = b(op.operand)
            if np.any(x.lo <= 0):
                return None
            return [_monotone(lambda v: 1 / np.sqrt(v), Box(x.hi, x.lo))]
        if isinstance(op, xmath.ErfOp):
            return [_monotone(_ERF, b(op.operand))]
        if isinstance(op, xmath.AbsFOp):
            x = b(op.operand)
            lo = np.where((x.lo <= 0) & (x.hi >= 0), 0.0, np.minimum(abs(x.lo), abs(x.hi)))
            return [Box(lo, x.absmax())]
        if isinstance(op, (xmath.SinOp, xmath.CosOp)):
            return [Box.full(_shape(op.result), -1.0, 1.0)]
        if isinstance(op, xmath.PowFOp):
            x, e = b(op.lhs), b(op.rhs)
            if np.all(e.lo == 2) and np.all(e.hi == 2):
                lo = np.where((x.lo <= 0) & (x.hi >= 0), 0.0, np.minimum(x.lo**2, x.hi**2))
                return [_clean(lo, np.maximum(x.lo**2, x.hi**2))]
            return None
        return self.transfer_structured(op)

    def transfer_structured(self, op: Operation):
        b = self.box
        if isinstance(op, tensor.EmptyOp):
            return [Box.point(np.zeros(_shape(op.tensor)))]
        if isinstance(op, (tensor.ReshapeOp, tensor.CollapseShapeOp, tensor.ExpandShapeOp)):
            x, shape = b(op.operands[0]), _shape(op.results[0])
            return [Box(x.lo.reshape(shape), x.hi.reshape(shape))]
        if isinstance(op, tensor.ConcatOp):
            boxes = [b(v) for v in op.operands]
            axis = op.dim.value.data
            return [Box(np.concatenate([x.lo for x in boxes], axis),
                        np.concatenate([x.hi for x in boxes], axis))]
        if isinstance(op, tensor.ExtractSliceOp):
            if len(op.operands) != 1:
                return None
            x = b(op.operands[0])
            index = tuple(slice(o, o + s * st, st) for o, s, st in zip(
                op.static_offsets.get_values(), op.static_sizes.get_values(),
                op.static_strides.get_values()))
            shape = _shape(op.result)
            return [Box(x.lo[index].reshape(shape), x.hi[index].reshape(shape))]
        if isinstance(op, linalg.FillOp):
            s, shape = b(op.operands[0]), _shape(op.results[0])
            return [Box(np.broadcast_to(s.lo, shape).copy(), np.broadcast_to(s.hi, shape).copy())]
        if isinstance(op, linalg.TransposeOp):
            x, perm = b(op.operands[0]), tuple(op.permutation.get_values())
            return [Box(np.transpose(x.lo, perm), np.transpose(x.hi, perm))]
        if isinstance(op, linalg.BroadcastOp):
            x, shape = b(op.operands[0]), _shape(op.results[0])
            dims = tuple(op.dimensions.get_values())
            return [Box(np.broadcast_to(np.expand_dims(x.lo, dims), shape).copy(),
                        np.broadcast_to(np.expand_dims(x.hi, dims), shape).copy())]
        if isinstance(op, linalg.ReduceOp):
            return self.reduce(op)
        if isinstance(op, linalg.MatmulOp):
            x, w, acc = (b(v) for v in op.operands)
            y = _matmul(x, w)
            return [_clean(y.lo + acc.lo, y.hi + acc.hi)]
        if isinstance(op, q35nn.BatchMatmulOp):
            x, y = b(op.lhs), b(op.rhs)
            if isinstance(op.lhs.owner, q35nn.SoftmaxOp) and op.lhs.owner.axis.value.data in (
                    -1, len(_shape(op.lhs)) - 1):
                # A convex combination of the rows of y: within their elementwise hull.
                shape = _shape(op.result)
                lo = np.broadcast_to(y.lo.min(axis=-2, keepdims=True), shape)
                hi = np.broadcast_to(y.hi.max(axis=-2, keepdims=True), shape)
                return [_clean(lo, hi)]
            return [_matmul(x, y)]
        if isinstance(op, quant3p5.QuantizeActivationsOp):
            x = b(op.input)
            r = x.absmax().max(axis=-1)
            return [Box.full(_shape(op.quantized), -127.0, 127.0),
                    _clean(np.zeros_like(r), np.maximum(r / 127, 1.0))]
        if isinstance(op, q35nn.SoftmaxOp):
            return [self.softmax(b(op.input), op.axis.value.data)]
        if isinstance(op, _SWIGLU):
            return [_mul(_with_min(_silu_safe, b(op.gate), *_SILU_MIN), b(op.up))]
        if isinstance(op, _ATTENTION):
            # softmax rows are convex weights: the result lies in the hull of the value rows.
            v = b(op.values)
            shape = _shape(op.result)
            return [_clean(np.broadcast_to(v.lo.min(axis=-2, keepdims=True), shape),
                           np.broadcast_to(v.hi.max(axis=-2, keepdims=True), shape))]
        if isinstance(op, q35nn.SiluOp):
            return [_with_min(_silu_safe, b(op.input), *_SILU_MIN)]
        if isinstance(op, q35nn.GeluOp):
            tanh = op.approximate.data == "tanh"
            return [_with_min(_gelu_tanh if tanh else _gelu_erf, b(op.input),
                              *(_GELU_TANH_MIN if tanh else _GELU_MIN))]
        if isinstance(op, q35nn.RMSNormOp):
            x, gamma = b(op.input), b(op.gamma)
            k = _shape(op.input)[-1]
            eps = op.epsilon.value.data
            # |x_k| / sqrt(mean(x^2) + eps) <= min(sqrt(K), |x_k| / sqrt(eps))
            norm = np.minimum(math.sqrt(k), x.absmax() / math.sqrt(eps)) if eps > 0 else \
                np.full(x.lo.shape, math.sqrt(k))
            if gamma.lo.shape == (k,) and np.array_equal(gamma.lo, gamma.hi):
                # sum_k (x_k / rms)^2 <= K: every row is in a ball (rounded once, float32)
                self.balls[op.result] = Ball(np.abs(gamma.lo), math.sqrt(k) * (1 + 2.0**-20))
            return [_mul(Box(-norm, norm), gamma)]
        if isinstance(op, q35nn.LayerNormOp):
            x, gamma, beta = b(op.input), b(op.gamma), b(op.beta)
            k = _shape(op.input)[-1]
            norm = np.full(x.lo.shape, math.sqrt(max(k - 1, 1)))  # max |z-score| of K values
            if all(v.lo.shape == (k,) and np.array_equal(v.lo, v.hi) for v in (gamma, beta)):
                # sum_k z_k^2 = K var / (var + eps) <= K: a ball around beta
                self.balls[op.result] = Ball(np.abs(gamma.lo), math.sqrt(k) * (1 + 2.0**-20),
                                             beta.lo.copy())
            y = _mul(Box(-norm, norm), gamma)
            return [_clean(y.lo + beta.lo, y.hi + beta.hi)]
        if isinstance(op, q35nn.GatherOp):
            data = b(op.data)
            axis = op.axis.value.data % data.lo.ndim
            idx = _shape(op.indices)
            lo = np.expand_dims(data.lo.min(axis=axis), tuple(range(axis, axis + len(idx))))
            hi = np.expand_dims(data.hi.max(axis=axis), tuple(range(axis, axis + len(idx))))
            shape = _shape(op.result)
            return [Box(np.broadcast_to(lo, shape).copy(), np.broadcast_to(hi, shape).copy())]
        if isinstance(op, quant3p5.GatherOp):  # any row of the decoded table, per element
            table = self.env.get(op.table)
            if not isinstance(table, Q3P5Tensor):
                return None
            dec = _Decoded(table)
            lo, hi = np.full(dec.k, np.inf), np.full(dec.k, -np.inf)
            for c0, c1 in dec.chunks():
                w = dec.columns(c0, c1, False)
                lo, hi = np.minimum(lo, w.min(axis=1)), np.maximum(hi, w.max(axis=1))
            shape = _shape(op.result)
            return [Box(np.broadcast_to(lo, shape).copy(), np.broadcast_to(hi, shape).copy())]
        return None

    def fused_stages(self, op, product: Box) -> list[Box]:
        """Intervals after each step of a fused_matmul: product, + bias, activation, + residual."""
        stages = [product]
        y = stages[0]
        if op.bias is not None:
            bias = self.box(op.bias)
            y = _clean(y.lo + bias.lo, y.hi + bias.hi)
        stages.append(y)
        y = activation_box(op.activation.data, y)
        stages.append(y)
        if op.residual is not None:
            res = self.box(op.residual)
            y = _clean(y.lo + res.lo, y.hi + res.hi)
        stages.append(y)
        return stages

    def dequantized_activation(self, op: quant3p5.MatmulInt8Op) -> Box:
        """An interval for scale[r] * q[r, k], the activation the int8 path multiplies."""
        producer = op.lhs.owner
        if isinstance(producer, quant3p5.QuantizeActivationsOp):
            x = self.box(producer.input)
            r = x.absmax().max(axis=-1, keepdims=True) * (1 + 2.0**-20)
            err = r / 254 * (1 + 2.0**-15)
            return _clean(x.lo - err, x.hi + err)
        return _mul(self.box(op.lhs), Box(self.box(op.lhs_scale).lo[..., None],
                                          self.box(op.lhs_scale).hi[..., None]))

    def softmax(self, x: Box, axis: int) -> Box:
        if not (np.isfinite(x.hi).all() and not np.isnan(x.lo).any()):
            return Box.full(x.lo.shape, 0.0, 1.0)
        shift = x.hi.max(axis=axis, keepdims=True)
        with np.errstate(all="ignore"):
            elo, ehi = np.exp(x.lo - shift), np.exp(x.hi - shift)
            slo, shi = elo.sum(axis=axis, keepdims=True), ehi.sum(axis=axis, keepdims=True)
            lo = elo / (elo + (shi - ehi))
            hi = ehi / (ehi + np.maximum(slo - elo, 0.0))
        lo = np.where(np.isfinite(lo), lo, 0.0)
        hi = np.where(np.isfinite(hi), np.minimum(hi, 1.0), 1.0)
        return _clean(np.maximum(lo, 0.0), hi)

    def reduce(self, op: linalg.ReduceOp):
        source, init = self.box(op.operands[0]), self.box(op.operands[1])
        body = list(op.region.block.ops)
        axes = tuple(op.dimensions.get_values())
        if len(body) != 2:
            return None
        kind = type(body[0])
        if kind in (arith.AddfOp, arith.AddiOp):
            lo, hi = source.lo.sum(axis=axes), source.hi.sum(axis=axes)
            return [_clean(lo + init.lo, hi + init.hi)]
        if kind in (arith.MaximumfOp, arith.MaxSIOp):
            return [Box(np.maximum(source.lo.max(axis=axes), init.lo),
                        np.maximum(source.hi.max(axis=axes), init.hi))]
        if kind in (arith.MinimumfOp, arith.MinSIOp):
            return [Box(np.minimum(source.lo.min(axis=axes), init.lo),
                        np.minimum(source.hi.min(axis=axes), init.hi))]
        return None


# -- error bounds ---------------------------------------------------------------------------


@dataclass
class LayerError:
    """The error analysis of one quantized matmul (arrays have the output's shape)."""

    op: Operation
    weight_name: str
    float_name: str | None
    shape: tuple[int, int]
    input_absmax: float
    bound: np.ndarray | None  # per output element; None when the input range is unbounded
    rms: float | None
    parts: str


def float_source(store: WeightStore, packed_name: str, shape: tuple[int, int]) -> str | None:
    """The float weight a packed entry was quantized from, if the store still has it.

    `quantize-weights` stores `W` under its name and the packed form under
    `<name>.<layout>` (or `<name>.<layout>.<i>`); nothing deletes the float entry.
    """
    m = re.fullmatch(r"(.*)\.(q3p5|pair43)(\.\d+)?", packed_name)
    if not m or m.group(1) not in store:
        return None
    name = m.group(1)
    if (entry := store.file_weight(name)) is not None:  # checked without reading the file
        ok = entry.result_shape == tuple(shape) and np.dtype(entry.as_dtype).kind == "f"
        return name if ok else None
    value = store[name]
    if isinstance(value, np.ndarray) and value.shape == shape and value.dtype.kind == "f":
        return name
    return None


def _weight_op(value: SSAValue) -> quant3p5.WeightOp | None:
    owner = value.owner
    return owner if isinstance(owner, quant3p5.WeightOp) else None


def analyse_function(fn: func.FuncOp, store: WeightStore, arg_range: float = 0.0,
                     input_range: float = 0.0) -> list[LayerError]:
    """The error analysis of every quantized matmul of `fn`, in program order."""
    intervals = IntervalAnalysis(fn, store, arg_range, input_range, release=True)
    layers = []
    for op in fn.body.blocks[0].ops:
        if isinstance(op, QUANTIZED_MATMULS):
            layer = intervals.layers.get(op)
            if layer is None:  # an operand the analysis could not bound
                k, n = op.weights.type.get_shape()
                wop = _weight_op(op.weights)
                name = wop.weight_name.data if wop else f"<{op.weights.owner.name}>"
                layer = LayerError(op, name, None, (k, n), math.inf, None, None,
                                   "input range unbounded")
            layers.append(layer)
    return layers


def _input_box(op, intervals: IntervalAnalysis, input_range: float):
    """The input activation interval, whether int8 activation quantization applies, and
    the L2 ball of the input rows (or None)."""
    value = op.lhs
    if isinstance(op, quant3p5.MatmulInt8Op):
        producer = op.lhs.owner
        if isinstance(producer, quant3p5.QuantizeActivationsOp):
            value = producer.input
            x, int8 = intervals.box(value), True
        else:  # int8 activations given directly: the op's own input is the reference
            x, int8 = intervals.dequantized_activation(op), False
    else:
        x, int8 = intervals.box(op.lhs), False
    if input_range > 0:
        x = Box(np.clip(x.lo, -input_range, input_range), np.clip(x.hi, -input_range, input_range))
    return x, int8, intervals.balls.get(value)
