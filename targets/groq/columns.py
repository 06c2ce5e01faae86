"""Column splits: a plan's chip assignment, and the weights it splits over chips by columns
compiled as one `matmul_int8` per column shard (used by `compile.py`)."""

from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp
from xdsl.rewriter import InsertPoint

from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.weights import WeightStore


def chip_assignment(plan) -> dict[int, int]:
    """IR op index (of the entry function) -> chip, from a plan's layer ranges. An op whose
    weight the plan splits over chips gets the first of them here (`split_columns` gives
    each column shard its own chip, `tables.split_tables` each row piece of a table).
    Chips are renumbered densely (a range of free ops only, such as reshapes, gets no
    chip)."""
    from q35c.targets.groq.plan import Plan

    assert isinstance(plan, Plan)
    raw = _raw_assignment(plan)
    numbering = _numbering(plan, raw)
    return {k: numbering[v] for k, v in raw.items()}


def _raw_assignment(plan) -> dict[int, int]:
    assign: dict[int, int] = {}
    for chip in plan.chips:
        first, last = chip["ops"]
        for op_index in range(first, last + 1):
            assign.setdefault(op_index, chip["chip"])
    return assign


def table_rows(plan) -> list[list]:
    """Per gather on a weight table (in op order): the plan's row ranges as `TablePiece`s
    on dense chips (one range when the plan keeps the table on one chip)."""
    from q35c.targets.groq.tables import TablePiece

    dense = _numbering(plan, _raw_assignment(plan))
    by_op: dict[int, list] = {}
    for x in plan.matmuls:
        if x["kind"] == "gather":
            r0, r1 = x["table_rows"]
            by_op.setdefault(x["op"], []).append(TablePiece(dense[x["chip"]], r0, r1))
    return [sorted(by_op[i], key=lambda p: p.r0) for i in sorted(by_op)]


def _numbering(plan, raw: dict[int, int]) -> dict[int, int]:
    """Plan chip -> dense chip number: chips that hold ops or column shards."""
    used = sorted(set(raw.values()) | {x["chip"] for x in plan.matmuls if "shard" in x})
    return {c: i for i, c in enumerate(used)}


class ShardStore(WeightStore):
    """The module's store plus the column shards of split weights (the target's private
    copy: the caller's store is never written)."""

    def __init__(self, base: WeightStore, shards: dict):
        super().__init__()
        self._base = base
        self._values.update(shards)

    def spec(self, name: str):
        return None if name in self._values else self._base.spec(name)

    def __getitem__(self, name: str):
        return self._values[name] if name in self._values else self._base[name]

    def __contains__(self, name: object) -> bool:
        return name in self._values or name in self._base

    def names(self) -> list[str]:
        return sorted(set(self._values) | set(self._base.names()))


def column_slice(w, c0: int, c1: int):
    """Columns c0..c1 of a Q3P5 tensor as a Q3P5 tensor of their own. Storage is column-major
    and columns are independent (docs/format.md: pair codes, group codes and the three
    per-column words are per column n), so the slice decodes to exactly those columns."""
    from q35c.compiler.quant import Q3P5Tensor

    return Q3P5Tensor((w.shape[0], c1 - c0), w.group_size, w.payload[c0:c1].copy(),
                      w.meta[c0:c1].copy(), w.super_scale[c0:c1].copy(),
                      w.offset_base[c0:c1].copy(), w.offset_step[c0:c1].copy())


def split_columns(module: ModuleOp, store: WeightStore, plan, assign: dict[int, int],
                  entry: str | None = None
                  ) -> tuple[ModuleOp, WeightStore, dict[int, int], list[dict]]:
    """Compile the plan's column splits: in a copy of `module`, every `matmul_int8` whose
    weight the plan splits over chips becomes one `matmul_int8` per shard (same int8
    activations and row scales, a new store entry holding the shard's columns) on the
    shard's chip, followed by a `tensor.concat` along the last axis on the chip of the last
    shard (where the plan gathers the split's outputs). Per-column math is independent, so
    the result is bit-identical. Returns (module, store, op index -> chip of the new
    module, one entry per split: weight, op, shards [{weight, chip, cols}], concat chip).
    Without splits the inputs come back unchanged."""
    from xdsl.dialects import tensor
    from xdsl.dialects.builtin import TensorType
    from xdsl.rewriter import Rewriter

    from q35c.compiler.entry import entry_function
    from q35c.compiler.quant import Q3P5Tensor
    from q35c.compiler.weights import attach_store
    from q35c.dialects import quant3p5

    shards_of: dict[int, list[dict]] = {}
    for x in plan.matmuls:
        if "shard" in x and x["kind"] == "matmul":
            shards_of.setdefault(x["op"], []).append(x)
    if not shards_of:
        return module, store, assign, []
    dense = _numbering(plan, _raw_assignment(plan))  # plan chip -> chip of `assign`
    copy = module.clone()
    ops = list(entry_function(copy, entry).body.block.ops)
    chip_of: dict[int, int] = {id(op): assign[i] for i, op in enumerate(ops) if i in assign}
    extra: dict = {}
    splits: list[dict] = []
    for index in sorted(shards_of):
        op = ops[index]
        if not isinstance(op, quant3p5.MatmulInt8Op) or not isinstance(
                op.weights.owner, quant3p5.WeightOp):
            raise Q35cError(f"groq target: the plan splits the columns of {op.name} (op "
                            f"{index}); only quant3p5.matmul_int8 on a weight is split")
        wname = op.weights.owner.weight_name.data
        w = store[wname]
        if not isinstance(w, Q3P5Tensor):
            raise Q35cError(f"groq target: weight '{wname}' is not in the q3p5 layout")
        parts = sorted(shards_of[index], key=lambda x: x["cols"][0])
        assert [p["cols"][0] for p in parts] == [0] + [p["cols"][1] for p in parts[:-1]]
        assert parts[-1]["cols"][1] == w.shape[1]
        lhs_shape = tuple(op.lhs.type.get_shape())
        results, entries = [], []
        for p in parts:
            c0, c1 = p["cols"]
            name = f"{wname}.cols{c0}-{c1}"
            while name in store or name in extra:
                name += "_"
            extra[name] = column_slice(w, c0, c1)
            wop = quant3p5.WeightOp(name, quant3p5.PackedWeightType(
                (w.shape[0], c1 - c0), w.group_size, "q3p5"))
            mm = quant3p5.MatmulInt8Op(op.lhs, op.lhs_scale, wop.result, 0 if op.rescale_rows
                                       is None else op.rescale_rows.value.data)
            Rewriter.insert_op([wop, mm], InsertPoint.before(op))
            chip_of[id(wop)] = chip_of[id(mm)] = dense[p["chip"]]
            results.append(mm.result)
            entries.append({"weight": name, "chip": dense[p["chip"]], "cols": [c0, c1]})
        out = op.result.type
        assert isinstance(out, TensorType)
        cat = tensor.ConcatOp(results, len(out.get_shape()) - 1, out)
        Rewriter.insert_op(cat, InsertPoint.before(op))
        chip_of[id(cat)] = entries[-1]["chip"]
        op.result.replace_all_uses_with(cat.result)
        Rewriter.erase_op(op)
        splits.append({"weight": wname, "op": index, "shape": list(w.shape),
                       "lhs_shape": list(lhs_shape), "shards": entries,
                       "concat_chip": entries[-1]["chip"]})
    copy.verify()
    shard_store = ShardStore(store, extra)
    attach_store(copy, shard_store)
    ops = list(entry_function(copy, entry).body.block.ops)
    new_assign = {i: chip_of[id(op)] for i, op in enumerate(ops) if id(op) in chip_of}
    return copy, shard_store, new_assign, splits


