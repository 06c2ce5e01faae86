"""Row splits of embedding tables: a `q35nn.gather` on a table too large for one MEM slice
group, or split over chips by the plan, compiled as row pieces and selects (used by
`compile.py`).

A float table such as SmolLM2's 49152 x 576 embedding (113 MB) cannot be one data buffer:
data buffers take 4 slices next to the VXM (10 MiB on tsp-v1). Its rows are cut into
pieces (`TablePiece`), each no larger than one 7-slice weight slice group (18.35 MB on
tsp-v1), on the chip the plan gives the rows; the placement puts every piece that does not
fit a data group into a weight slice group (schedule/placement.py, layout `rows`). The
gather becomes, with `i` the indices normalized to `0 <= i < vocab` (the interpreter's
negative-index rule):

    per piece p of rows [r0, r1):
        local_p = i - r0;  in_p = (local_p >= 0) & (local_p < r1 - r0)
        rows_p  = gather(piece_p, where(in_p, local_p, 0))
        y_p     = where(in_p, rows_p, y_{p-1})        (y_0 = rows_0)

as generic ONNX ops (`q35nn.onnx_node` Less, Add, Sub, GreaterOrEqual, And, Where: VXM
macros with the interpreter's semantics; xDSL's `arith.cmpi` takes no tensors), with
`in_p` reshaped to broadcast over the rows' trailing dims.

Every in-range index lies in exactly one piece, so `y` holds exactly the rows the original
gather returns (selection only, no arithmetic on the values): bit-identical with the
interpreter. The pieces' ops go to their chips; the indices and the running `y` cross
chips as ordinary C2C transfers (schedule/multichip.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.dialects import arith, tensor
from xdsl.dialects.builtin import (
    DenseIntOrFPElementsAttr,
    DictionaryAttr,
    ModuleOp,
    TensorType,
    i1,
    i64,
)
from xdsl.ir import Operation, SSAValue
from xdsl.rewriter import InsertPoint, Rewriter

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.entry import entry_function
from q35c.compiler.weights import WeightStore, attach_store
from q35c.dialects import q35nn, quant3p5
from q35c.targets.groq.cost import BLOCK_BYTES, DATA_SLICES
from q35c.targets.groq.machine import Machine


@dataclass(frozen=True)
class TablePiece:
    """Rows [r0, r1) of a table, on `chip`."""

    chip: int
    r0: int
    r1: int


def data_group_bytes(m: Machine) -> int:
    """Bytes of one data slice group (DATA_SLICES slices): the largest table that stays a
    data buffer next to the VXM."""
    return DATA_SLICES * m.vectors_per_slice * m.vector_bytes


def piece_rows(m: Machine, row_bytes: int, table: str) -> int:
    """Most rows of a piece that fits one 7-slice weight slice group (whole vectors per
    slice); a row larger than a group is an error naming the table."""
    vectors = BLOCK_BYTES * m.vectors_per_slice
    rows = vectors * m.vector_bytes // row_bytes
    while rows > 0 and -(-rows * row_bytes // m.vector_bytes) > vectors:
        rows -= 1
    if rows <= 0:
        raise Q35cError(f"groq target: SRAM overflow: one row of table '{table}' "
                        f"({row_bytes} bytes) does not fit one MEM slice group of machine "
                        f"{m.name} ({vectors * m.vector_bytes} bytes)")
    return rows


def table_pieces(m: Machine, table: str, shape: tuple[int, ...], itemsize: int,
                 planned: list[TablePiece]) -> list[TablePiece]:
    """The plan's row ranges (one per chip), each cut into pieces that fit a slice group;
    one piece (no split) when the table fits a data slice group and the plan keeps it on
    one chip."""
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * itemsize
    if len(planned) == 1 and shape[0] * row_bytes <= data_group_bytes(m):
        return planned
    most = piece_rows(m, row_bytes, table)
    pieces = []
    for p in planned:
        parts = -(-(p.r1 - p.r0) // most)
        start = p.r0
        for j in range(parts):
            stop = start + (p.r1 - p.r0) // parts + (1 if j < (p.r1 - p.r0) % parts else 0)
            pieces.append(TablePiece(p.chip, start, stop))
            start = stop
    return pieces


OPSET = 18
"""ONNX opset of the generic ops the split emits (their semantics are unchanged since)."""


def _node(op_type: str, inputs: list[SSAValue], result: TensorType) -> q35nn.OnnxNodeOp:
    return q35nn.OnnxNodeOp(op_type, OPSET, inputs, [result], DictionaryAttr({}))


def _const(value: int | list[int], like: TensorType) -> arith.ConstantOp:
    values = value if isinstance(value, list) else [value]
    return arith.ConstantOp(DenseIntOrFPElementsAttr.from_list(like, values), like)


class _Builder:
    """Inserts ops before `anchor`, each recorded with its chip."""

    def __init__(self, anchor: Operation, chip_of: dict[int, int]):
        self.anchor, self.chip_of = anchor, chip_of

    def add(self, op: Operation, chip: int) -> SSAValue:
        Rewriter.insert_op(op, InsertPoint.before(self.anchor))
        self.chip_of[id(op)] = chip
        return op.results[0]


def _split_one(op: q35nn.GatherOp, pieces: list[TablePiece], store: WeightStore,
               extra: dict, chip_of: dict[int, int]) -> dict:
    table_op = op.operands[0].owner
    assert isinstance(table_op, quant3p5.WeightOp)
    name = table_op.weight_name.data
    data = np.asarray(store[name])
    idx = op.operands[1]
    itype, out = idx.type, op.results[0].type
    assert isinstance(itype, TensorType) and isinstance(out, TensorType)
    shape = list(itype.get_shape())
    mask_type = TensorType(i1, shape)
    # the mask of a piece, shaped to broadcast over the rows' trailing dims
    row_mask = TensorType(i1, shape + [1] * (len(out.get_shape()) - len(shape)))
    b = _Builder(op, chip_of)
    c = pieces[0].chip
    zero = b.add(_const(0, itype), c)
    negative = b.add(_node("Less", [idx, zero], mask_type), c)
    wrapped = b.add(_node("Add", [idx, b.add(_const(data.shape[0], itype), c)], itype), c)
    index = b.add(_node("Where", [negative, wrapped, idx], itype), c)
    y: SSAValue | None = None
    entries = []
    for p in pieces:
        key = f"{name}.rows{p.r0}-{p.r1}"
        while key in store or key in extra:
            key += "_"
        extra[key] = np.ascontiguousarray(data[p.r0:p.r1])
        ptype = TensorType(table_op.result.type.get_element_type(),
                           [p.r1 - p.r0, *data.shape[1:]])
        piece = b.add(quant3p5.WeightOp(key, ptype), p.chip)
        c = p.chip
        zero = b.add(_const(0, itype), c)
        local = b.add(_node("Sub", [index, b.add(_const(p.r0, itype), c)], itype), c)
        low = b.add(_node("GreaterOrEqual", [local, zero], mask_type), c)
        high = b.add(_node("Less", [local, b.add(_const(p.r1 - p.r0, itype), c)],
                           mask_type), c)
        inside = b.add(_node("And", [low, high], mask_type), c)
        safe = b.add(_node("Where", [inside, local, zero], itype), c)
        rows = b.add(q35nn.GatherOp(piece, safe, 0), c)
        if rows.type != out:
            raise Q35cError(f"groq target: table '{name}' of {table_op.result.type} is split "
                            "into row pieces only as a float32 table")
        if y is None:
            y = rows
        else:
            dims = TensorType(i64, [len(row_mask.get_shape())])
            mask = b.add(tensor.ReshapeOp(inside, b.add(_const(list(row_mask.get_shape()),
                                                                dims), c), row_mask), c)
            y = b.add(_node("Where", [mask, rows, y], out), c)
        entries.append({"weight": key, "chip": c, "rows": [p.r0, p.r1]})
    op.results[0].replace_all_uses_with(y)
    Rewriter.erase_op(op)
    return {"table": name, "shape": list(data.shape), "pieces": entries}


def table_gathers(module: ModuleOp, entry: str | None) -> list[tuple[int, q35nn.GatherOp]]:
    """(op index, op) of every `q35nn.gather` on a weight table, in op order."""
    ops = list(entry_function(module, entry).body.block.ops)
    return [(i, op) for i, op in enumerate(ops) if isinstance(op, q35nn.GatherOp)
            and isinstance(op.operands[0].owner, quant3p5.WeightOp)
            and isinstance(op.operands[0].type, TensorType)]


def split_tables(module: ModuleOp, store: WeightStore, planned: list[list[TablePiece]],
                 assign: dict[int, int], m: Machine, entry: str | None = None
                 ) -> tuple[ModuleOp, WeightStore, dict[int, int], list[dict]]:
    """Compile the row splits of the module docstring. `planned[j]`: the plan's row ranges
    (dense chips) of the j-th table gather in op order. Returns (module, store, op index ->
    chip of the new module, one entry per split table: table, shape, pieces [{weight,
    chip, rows}]); without splits the inputs come back unchanged."""
    from q35c.targets.groq.columns import ShardStore

    gathers = table_gathers(module, entry)
    cuts = []
    for (index, op), plan_rows in zip(gathers, planned):
        t = op.operands[0].type
        pieces = table_pieces(m, op.operands[0].owner.weight_name.data,
                              tuple(t.get_shape()), _itemsize(t), plan_rows)
        if len(pieces) > 1:
            cuts.append((index, pieces))
    if not cuts:
        return module, store, assign, []
    copy = module.clone()
    ops = list(entry_function(copy, entry).body.block.ops)
    chip_of = {id(op): assign[i] for i, op in enumerate(ops) if i in assign}
    extra: dict = {}
    splits = [_split_one(ops[index], pieces, store, extra, chip_of) for index, pieces in cuts]
    copy.verify()
    table_store = ShardStore(store, extra)
    attach_store(copy, table_store)
    ops = list(entry_function(copy, entry).body.block.ops)
    return copy, table_store, {i: chip_of[id(o)] for i, o in enumerate(ops)
                               if id(o) in chip_of}, splits


def _itemsize(t: TensorType) -> int:
    from q35c.compiler.tensors import numpy_dtype

    return np.dtype(numpy_dtype(t.get_element_type())).itemsize
