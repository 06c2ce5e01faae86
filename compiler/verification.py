"""Verify a module once, then only what changed since (import and every pass).

Re-verifying the whole module after every pass made a pipeline cost (passes + 1) full
verifications: on a 7,000-node ONNX export that was a third of the compile time. xDSL's
verifiers are local: an op's verifier reads its own operands and their types, results,
attributes, properties, successors, its place in its block (terminators), its parent (traits
such as `HasParent`) and the ops of its own regions (`IsolatedFromAbove`, a function's
return types). So `VerifiedIR` keeps, for every op as it last verified, a fingerprint of
exactly those; `verify` then checks only

- ops that are new or whose fingerprint changed;
- their ancestors, and the old parents of ops that were erased (their regions changed);
- the ops directly inside an op that is new or whose own fingerprint changed, where their
  verifiers read the parent (terminators, `HasParent`): a function whose type changed must
  re-check its `func.return`;
- every symbol user (`func.call` reads another op, its callee).

Each such op is checked by `verify_op`: what xDSL's `module.verify()` checks of one op, so
an incremental verification rejects what a full `module.verify()` rejects. When it does
reject, `verify_module` runs `module.verify()`, so that the message is the one a full
verification gives.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.ir.core import ErasedSSAValue
from xdsl.traits import (
    HasAncestor,
    HasParent,
    IsTerminator,
    NoTerminator,
    SymbolUserOpInterface,
)
from xdsl.utils.exceptions import VerifyException


def fingerprint(op: Operation) -> tuple:
    """What an op's verifier can read of it (see the module docstring), but for whether it
    ends its block (`VerifiedIR` notes that apart: only an op that became last needs a new
    check). Objects compare by identity (SSA values, blocks, ops), attributes by value,
    which an unchanged attribute answers at once (it is the same object)."""
    return (
        op.parent,
        tuple(op.operands), tuple(operand.type for operand in op.operands),
        tuple(result.type for result in op.results),
        tuple(op.attributes.items()), tuple(op.properties.items()), tuple(op.successors),
        tuple((region, tuple((block, tuple(arg.type for arg in block.args),
                              block.first_op is None) for block in region.blocks))
              for region in op.regions),
    )


def _entry(op: Operation) -> tuple[tuple, Operation | None, bool]:
    return fingerprint(op), op.parent_op(), op.next_op is None


def verify_op(op: Operation) -> None:
    """What `module.verify()` checks of `op` itself, without its nested ops: the structural
    checks of xDSL's `Operation.verify` (erased operands, successors, terminators), the
    op's verifiers (`verify_`), and the empty-block check of `Block.verify` for its own
    blocks. Unlike `Operation.verify`, a failure raises the verifier's exception as it is:
    xDSL's diagnostic prints the whole enclosing module into the message, a cost in
    proportion to the IR for every rejected op."""
    for operand in op.operands:
        if isinstance(operand, ErasedSSAValue):
            raise ValueError("Erased SSA value is used by the operation")
    block = op.parent
    region = None if block is None else block.parent
    if op.successors:
        if block is None or region is None:
            raise VerifyException(f"Operation {op.name} with block successors does not "
                                  "belong to a block or a region")
        if block.last_op is not op:
            raise VerifyException(f"Operation {op.name} with block successors must "
                                  "terminate its parent block")
        if any(successor.parent != region for successor in op.successors):
            raise VerifyException(f"Operation {op.name} is branching to a block of a "
                                  "different region")
    if block is not None and region is not None and block.last_op is op \
            and not op.has_trait(IsTerminator):
        if len(region.blocks) > 1:
            raise VerifyException(f"Operation {op.name} terminates block in multi-block "
                                  "region but is not a terminator")
        if (parent := region.parent) is not None and not parent.has_trait(NoTerminator):
            raise VerifyException(f"Operation {op.name} terminates block in single-block "
                                  "region but is not a terminator")
    for own in op.regions:
        if len(own.blocks) == 1 and own.blocks[0].first_op is None \
                and not op.has_trait(NoTerminator):
            raise VerifyException(f"Operation {op.name} contains empty block in "
                                  "single-block region that expects at least a terminator")
    op.verify_()


@dataclass
class VerifiedIR:
    """The ops of a module as they were when they last verified (fingerprint and parent
    op, keyed by op: the op stays referenced, so an id is never reused meanwhile)."""

    prints: dict[Operation, tuple[tuple, Operation | None, bool]] = field(default_factory=dict)
    """Op -> (fingerprint, parent op, whether it ended its block)."""
    checked: int = 0
    """How many ops the verifications so far checked (tests count it: verification must
    stay linear in the size of the IR, not grow with the number of passes)."""

    def record(self, op: Operation) -> None:
        """Note `op` and the ops nested in it as verified by the caller (`verify_op` passed
        on each)."""
        for inner in op.walk():
            self.prints[inner] = _entry(inner)

    def forget(self, op: Operation) -> None:
        """Drop an op (and its nested ops) that the caller erased."""
        for inner in op.walk():
            self.prints.pop(inner, None)

    def verify(self, module: ModuleOp) -> None:
        """Verify the ops of `module` that are new or changed since the last call (all of
        them the first time), raising `VerifyException` (or xDSL's `ValueError` for an
        erased value in use) on the first that does not verify."""
        current = {op: _entry(op) for op in module.walk()}
        dirty: set[Operation] = set()
        own_change: list[Operation] = []
        for op, (print_, _, last) in current.items():
            old = self.prints.get(op)
            if old is None or old[0] != print_:
                dirty.add(op)
                own_change.append(op)
            elif (last and not old[2]) or _is_symbol_user(type(op)):
                dirty.add(op)
        for op, (_, parent, _) in self.prints.items():  # erased or moved: the old parent's
            now = current.get(op)                      # regions changed
            if (now is None or now[1] is not parent) and parent in current:
                dirty.add(parent)
        for op in own_change:
            for region in op.regions:
                for block in region.blocks:
                    dirty.update(inner for inner in block.ops if _reads_parent(type(inner)))
        for op in list(dirty):
            parent = current[op][1]
            while parent is not None and parent not in dirty:
                dirty.add(parent)
                parent = current[parent][1]
        ordered = [op for op in current if op in dirty]  # walk order: parents first
        for op in reversed(ordered):  # nested ops first, as module.verify() does
            verify_op(op)
        self.checked += len(ordered)
        self.prints = current


@functools.cache
def _reads_parent(op_type: type[Operation]) -> bool:
    """Whether an op's verifiers read its parent op: terminators (`func.return` checks the
    function's result types) and ops with a `HasParent` / `HasAncestor` trait."""
    return any(op_type.get_traits_of_type(trait)
               for trait in (IsTerminator, HasParent, HasAncestor))


@functools.cache
def _is_symbol_user(op_type: type[Operation]) -> bool:
    return bool(op_type.get_traits_of_type(SymbolUserOpInterface))


_STATE_ATTR = "_q35c_verified"
"""The attribute of a module that holds its `VerifiedIR`. Not a WeakKeyDictionary keyed by
module, like the weight stores: the record refers to the module's ops, so the dictionary
would keep every module alive; as an attribute it is a cycle the garbage collector frees
with the module."""


def attach_verified(module: ModuleOp, state: VerifiedIR) -> None:
    """Make `state` (what the frontend verified of `module`) its record for this process."""
    setattr(module, _STATE_ATTR, state)


def verified_state(module: ModuleOp) -> VerifiedIR:
    """The `VerifiedIR` of `module` in this process: what its frontend or the passes so
    far verified (empty, so that everything is checked, for a module nothing recorded)."""
    state = getattr(module, _STATE_ATTR, None)
    if state is None:
        state = VerifiedIR()
        attach_verified(module, state)
    return state


def verify_reason(err: VerifyException) -> str:
    """A verifier's message on one line: xDSL puts the reason on the lines after
    "operand 'x' at position 0 does not verify:", so its first line alone says nothing."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or \
        type(err).__name__


def verify_module(module: ModuleOp, describe: Callable[[str], Exception]) -> None:
    """Verify what changed in `module` since its last verification; on a failure, raise
    `describe(reason)`, the reason (`verify_reason`) being the one a full `module.verify()`
    gives: the message does not depend on what was verified before."""
    try:
        verified_state(module).verify(module)
    except VerifyException as err:
        try:
            module.verify()
        except VerifyException as full:
            raise describe(verify_reason(full)) from None
        raise describe(verify_reason(err)) from None
