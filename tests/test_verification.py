"""Verification after import and after every pass checks only what changed
(q35c.compiler.verification), yet rejects whatever a full `module.verify()` rejects, with
the verifier's reason on one line; and the number of ops verified stays linear in the size
of the model, whatever the number of passes."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from xdsl.context import Context
from xdsl.dialects import arith, func
from xdsl.dialects.builtin import FunctionType, IntegerAttr, ModuleOp, TensorType, f32, i32, i64
from xdsl.ir import Block, Region
from xdsl.irdl.operations import OpDef
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import VerifyException

from q35c.compiler.context import make_context
from q35c.compiler.diagnostics import Q35cError
from q35c.compiler.driver import build_pipeline, run_pipeline
from q35c.compiler.frontends import FrontendOptions
from q35c.compiler.frontends.onnx import load_onnx
from q35c.compiler.verification import verified_state, verify_reason
from q35c.dialects.q35nn import SoftmaxOp


def _module() -> ModuleOp:
    """main(x: f32, k: i32) -> f32: softmax(x) then softmax again (verifies)."""
    ttype, itype = TensorType(f32, [2, 3]), TensorType(i32, [2, 3])
    block = Block(arg_types=[ttype, itype])
    first = SoftmaxOp(block.args[0], axis=1)
    second = SoftmaxOp(first.result, axis=-1)
    block.add_ops([first, second, func.ReturnOp(second.result)])
    return ModuleOp([func.FuncOp("main", ([ttype, itype], [ttype]), Region(block))])


def _ops(module: ModuleOp):
    fn = next(op for op in module.walk() if isinstance(op, func.FuncOp))
    first, second, ret = fn.body.block.ops
    return fn, first, second, ret


def _set_axis(module):
    _ops(module)[1].attributes["axis"] = IntegerAttr(5, i64)


def _erase_return(module):
    _ops(module)[3].detach()


def _change_function_type(module):
    fn = _ops(module)[0]
    fn.function_type = FunctionType.from_lists(fn.function_type.inputs.data,
                                               [TensorType(f32, [3, 2])])


def _wrong_operand_type(module):
    fn, first, _, _ = _ops(module)
    first.operands[0] = fn.body.block.args[1]


def _new_invalid_op(module):
    fn, first, _, _ = _ops(module)
    fn.body.block.insert_op_after(SoftmaxOp(first.result, axis=7), first)


def _erase_middle_op(module):
    fn, first, second, ret = _ops(module)
    ret.operands[0] = first.result
    second.detach()
    second.erase()


def _empty_function(module):
    fn = _ops(module)[0]
    for op in reversed(list(fn.body.block.ops)):
        op.detach()
        op.erase(safe_erase=False)


def _nested_op_changed(module):
    """An op inside a region other than the function's: a constant in a new function."""
    const = arith.ConstantOp(IntegerAttr(1, i64))
    block = Block()
    block.add_ops([const, func.ReturnOp(const.result)])
    module.body.block.add_op(func.FuncOp("other", ([], [i64]), Region(block)))


MUTATIONS = [_set_axis, _erase_return, _change_function_type, _wrong_operand_type,
             _new_invalid_op, _empty_function]


def Mutate(change) -> ModulePass:  # noqa: N802 (reads as the pass it makes)
    """A pass named `mutate` that applies `change` to the module."""

    class _Mutate(ModulePass):
        name = "mutate"

        def apply(self, ctx: Context, op: ModuleOp) -> None:
            change(op)

    return _Mutate()


def _full_reason(mutation) -> str | None:
    module = _module()
    mutation(module)
    try:
        module.verify()
    except VerifyException as err:
        return verify_reason(err)
    return None


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.__name__.strip("_"))
def test_a_pass_that_breaks_an_existing_op_is_caught(mutation):
    """After a first pass verified the whole module, a second pass changes one op in
    place (or erases one, or changes the function's type): the incremental verification
    must reject it with the full verification's reason, on one line."""
    want = _full_reason(mutation)
    assert want is not None, "the mutation must make the module invalid"
    module = _module()
    with pytest.raises(Q35cError) as info:
        run_pipeline(make_context(), module,
                     [Mutate(lambda m: None), Mutate(mutation)])
    message = str(info.value)
    assert message == f"pass 'mutate' produced invalid IR: {want}"
    assert "\n" not in message


def test_an_operand_type_error_says_what_did_not_verify():
    """xDSL writes "operand 'input' at position 0 does not verify:" and the reason on the
    next line; the error must carry the reason."""
    module = _module()
    with pytest.raises(Q35cError, match=r"does not verify: i32 should be of base attribute "
                                         r"f32"):
        run_pipeline(make_context(), module, [Mutate(lambda m: None),
                                              Mutate(_wrong_operand_type)])


def test_valid_changes_pass_and_are_checked_once():
    module = _module()
    run_pipeline(make_context(), module, [Mutate(lambda m: None),
                                          Mutate(_nested_op_changed),
                                          Mutate(lambda m: None),
                                          Mutate(_erase_middle_op)])
    module.verify()
    # 5 ops at first (module, func, 2 softmax, return); then the 3 new ones and their
    # module; then the changed return, its function and the module
    assert verified_state(module).checked == 5 + 4 + 3


def _chain(path: Path, nodes: int) -> Path:
    """A model of `nodes` Softmax nodes in a chain."""
    graph = helper.make_graph(
        [helper.make_node("Softmax", [f"v{i}"], [f"v{i + 1}"], axis=-1) for i in range(nodes)],
        "chain", [helper.make_tensor_value_info("v0", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info(f"v{nodes}", TensorProto.FLOAT, [2, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _count_verifications(monkeypatch) -> list[int]:
    """Count the IRDL verifications (`OpDef.verify`, which every op's `verify_` calls)."""
    calls = [0]
    original = OpDef.verify

    def counting(self, op):
        calls[0] += 1
        return original(self, op)

    monkeypatch.setattr(OpDef, "verify", counting)
    return calls


@pytest.mark.parametrize("nodes", [50, 100])
def test_import_and_pipeline_verify_each_op_about_once(tmp_path, monkeypatch, nodes):
    """Import verifies each node's ops once as it converts them; the final check and each
    pass that changes nothing add only the few ops around them. Before, import verified
    the module again at its end and every pass verified all of it: here, 2 + 6 times."""
    path = _chain(tmp_path / "chain.onnx", nodes)
    ctx = make_context()
    calls = _count_verifications(monkeypatch)
    module = load_onnx(path, ctx, FrontendOptions())
    ops = sum(1 for _ in module.walk())
    assert ops >= nodes
    after_import = calls[0]
    assert after_import <= ops + 3
    run_pipeline(ctx, module, build_pipeline("canonicalize,cse,canonicalize,cse,"
                                             "canonicalize,cse"))
    assert calls[0] - after_import <= 6 * 3  # module and function per pass, at most


def test_a_verified_module_is_freed(tmp_path):
    """The record of what verified refers to the module's ops: it must not keep modules
    alive (the node suite compiles 1,884 of them in one process)."""
    path = _chain(tmp_path / "chain.onnx", 3)
    ctx = make_context()
    module = load_onnx(path, ctx, FrontendOptions())
    run_pipeline(ctx, module, build_pipeline("canonicalize,cse"))
    ref = weakref.ref(module)
    del module
    gc.collect()
    assert ref() is None
