"""The compile and run API that the CLI (and tests) call.

    load_input -> run_pipeline (the user's passes, then the target's own `pipeline()`;
    verify + optional dump after every pass) -> check the target's accepted ops -> target

Nothing here knows a particular target: what differs between targets (their passes, the
ops they accept, --shape-only, `q35c report`) is declared by the target (targets/target.py).

Everything that can go wrong because of the user's input or a plugin raises `Q35cError`
with one line naming the file and the op, pass or plugin. Outputs are written to a
temporary directory and moved into place only on success, so a failure writes nothing to -o.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.passes import ModulePass
from xdsl.utils.arg_spec import parse_spec

from q35c.compiler.codegen_names import file_stem, file_stems, plain_text
from q35c.compiler.context import make_context
from q35c.compiler.diagnostics import Q35cError, first_line
from q35c.compiler.frontends import (
    DEFAULT_MAX_TENSOR_BYTES,
    FRONTENDS,
    PLANNED as PLANNED_FRONTENDS,
    FrontendOptions,
)
from q35c.compiler.ir_text import module_text
from q35c.compiler.outputs import IRDumper, write_atomically
from q35c.compiler.progress import progress_bar
from q35c.compiler.registry import (
    Registry,
    describe_exception,
    load_entry,
    load_registry,
    plugin_note,
)
from q35c.compiler.universe import PLANNED_TARGETS
from q35c.compiler.verification import verify_module
from q35c.compiler.weights import store_of
from q35c.targets import COMPILE_TARGET, RUN_TARGET
from q35c.targets.target import Q35cTarget

DEFAULT_PIPELINE = "quantize-weights,canonicalize,cse"
"""What `q35c INPUT` runs unless --passes says otherwise; `default` in --passes expands to it."""
VERIFY_PIPELINE = "verify-overflow,verify-quant-error"
"""Part of the default pipeline, but run last: a pipeline that uses `default` (or none) ends
with these, so they check the final IR (e.g. after `default,int8-activations`)."""


def load_input(path: Path, ctx: Context, options: FrontendOptions | None = None) -> ModuleOp:
    """Run the frontend for `path`'s extension; the module gets its weight store attached."""
    if not path.exists():
        raise Q35cError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in PLANNED_FRONTENDS:
        raise Q35cError(f"{path}: the {PLANNED_FRONTENDS[suffix]} frontend is not implemented yet")
    if suffix not in FRONTENDS:
        known = ", ".join(sorted(FRONTENDS))
        raise Q35cError(f"{path}: unknown input kind '{suffix}' (q35c reads {known})")
    return FRONTENDS[suffix]()(path, ctx, options or FrontendOptions())


# -- pipelines -----------------------------------------------------------------------------


def _expand_default(spec: str, verify: bool = True) -> str:
    elements = [e.strip() for e in _split_top_level(spec)]
    if "default" in elements and verify:
        named = {e.partition("{")[0].strip() for e in elements}
        elements += [v for v in VERIFY_PIPELINE.split(",") if v not in named]
    return ",".join(DEFAULT_PIPELINE if e == "default" else e for e in elements if e)


def _split_top_level(spec: str) -> list[str]:
    """Split a pipeline at commas outside `{...}` option blocks and quoted strings."""
    parts, depth, quoted, current = [], 0, False, []
    for ch in spec:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "{}":
            depth += 1 if ch == "{" else -1
        elif ch == "," and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def build_pipeline(spec: str | None, registry: Registry | None = None,
                   keep_float: str | None = None, verify: bool = True,
                   calibration: str | None = None, bpw: float | None = None,
                   group_for: str | None = None) -> list[ModulePass]:
    """Pass instances for a pipeline spec in xDSL syntax (None means the default pipeline).

    `keep_float` (from --keep-float) sets the option of that name on every
    `quantize-weights` in the pipeline. `verify=False` leaves the verification passes out
    of `default` (--shape-only: they read weight data). `calibration` (a statistics .npz,
    from --calibration), `bpw` (--bpw) and `group_for` (--group-for) set the options of
    those names on every `quantize-weights`.
    """
    registry = registry or load_registry()
    text = _expand_default("default" if spec is None else spec, verify)
    passes = []
    for element in _split_top_level(text) if text else []:
        try:
            pass_spec = parse_spec(element)
        except BaseException as err:  # xDSL's ArgSpecParseError derives from BaseException
            raise Q35cError(f"--passes: cannot parse '{element}': {first_line(err)}") from None
        if pass_spec.name not in registry.passes:
            broken = "".join(f"; plugin '{p}' {why}" for p, why in registry.broken.items())
            raise Q35cError(
                f"--passes: unknown pass '{pass_spec.name}' (`q35c passes` lists them){broken}")
        pass_type = load_entry(registry, "pass", pass_spec.name, registry.passes[pass_spec.name])
        try:
            pass_ = pass_type.from_pass_spec(pass_spec)
        except Q35cError:  # an option out of range (q35c.compiler.options): complete already
            raise
        except (ValueError, TypeError) as err:
            raise Q35cError(f"--passes: {pass_spec.name}: {first_line(err)}") from None
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # a plugin's options code: SystemExit and all
            if registry.plugin_of("pass", pass_spec.name) is None:
                raise
            note = plugin_note(registry, "pass", pass_spec.name)
            raise Q35cError(f"--passes: {pass_spec.name}{note}: "
                            f"{describe_exception(err)}") from None
        if keep_float and pass_spec.name == "quantize-weights":
            pass_ = dataclasses.replace(pass_, keep_float=keep_float)
        if calibration and pass_spec.name == "quantize-weights":
            pass_ = dataclasses.replace(pass_, calibration=calibration)
        if bpw and pass_spec.name == "quantize-weights":
            pass_ = dataclasses.replace(pass_, bpw=float(bpw))
        if group_for and pass_spec.name == "quantize-weights":
            pass_ = dataclasses.replace(pass_, group_for=group_for)
        passes.append(pass_)
    return passes


def run_pipeline(ctx: Context, module: ModuleOp, passes: Iterable[ModulePass], *,
                 dumper: IRDumper | None = None, print_after_all: bool = False,
                 registry: Registry | None = None) -> None:
    """Apply `passes` in order, verifying the IR after each one: the ops it added or
    changed (q35c.compiler.verification), so that a pipeline costs one verification of the
    module, not one per pass.

    A pass that raises, or that leaves IR the verifier rejects, is reported by name (and
    plugin); no later pass runs.
    """
    registry = registry or load_registry()
    passes = list(passes)
    if dumper:
        dumper.dump(0, "input", "input", module)
    with progress_bar(len(passes), "passes") as bar:
        for index, pass_ in enumerate(passes, 1):
            where = f"pass '{pass_.name}'{plugin_note(registry, 'pass', pass_.name)}"
            try:
                pass_.apply(ctx, module)
            except (Q35cError, KeyboardInterrupt):
                raise
            except BaseException as err:  # SystemExit and the like from plugin code too
                raise Q35cError(f"{where} failed: {describe_exception(err)}") from err
            verify_module(module, lambda reason, where=where: Q35cError(
                f"{where} produced invalid IR: {reason}"))
            spec = str(pass_.pipeline_pass_spec(include_default=True))
            if dumper:
                dumper.dump(index, pass_.name, spec, module)
            if print_after_all:
                print(f"// -----// IR after {spec} //----- //", file=sys.stderr)
                print(module_text(module, weights_file=None), file=sys.stderr)
            bar.update()
    if dumper:
        dumper.finish(store_of(module))


# -- targets and outputs -------------------------------------------------------------------


def get_target(name: str, registry: Registry | None = None, shape_only: bool = False
               ) -> Q35cTarget:
    """A target instance from a spec such as `mlir` or `groq{chips=2}`: q35c's own targets
    and plugins', from the registry. `shape_only`: the target for `--shape-only`, refused
    with one line by a target that does not support it."""
    registry = registry or load_registry()
    try:
        spec = parse_spec(name)
    except BaseException as err:  # xDSL's ArgSpecParseError derives from BaseException
        raise Q35cError(f"--target: cannot parse '{name}': {first_line(err)}") from None
    if spec.name not in registry.targets:
        if spec.name in PLANNED_TARGETS:
            raise Q35cError(f"target {spec.name} is not implemented yet")
        known = ", ".join(sorted(registry.targets) + list(PLANNED_TARGETS))
        broken = "".join(f"; plugin '{p}' {why}" for p, why in registry.broken.items())
        raise Q35cError(f"unknown target '{spec.name}' (known: {known}){broken}")
    cls = load_target_class(registry, spec.name)
    if shape_only and not cls.supports_shape_only:
        supported = [c.name for c in loadable_targets(registry) if c.supports_shape_only]
        raise Q35cError(f"--shape-only is supported by --target {' and '.join(supported)}, "
                        f"not '{spec.name}'")
    try:
        return cls.shape_only_from_spec(spec) if shape_only else cls.from_spec(spec)
    except (ValueError, TypeError) as err:
        raise Q35cError(f"--target {spec.name}: {first_line(err)}") from None


def load_target_class(registry: Registry, name: str) -> type[Q35cTarget]:
    """The class of registered target `name`; a plugin's failure to load, or a class that
    is not a `Q35cTarget`, is one line naming the plugin."""
    cls = load_entry(registry, "target", name, registry.targets[name])
    if not (isinstance(cls, type) and issubclass(cls, Q35cTarget)):
        raise Q35cError(f"target '{name}'{plugin_note(registry, 'target', name)} is not a "
                        "q35c target (a Q35cTarget subclass)")
    return cls


def loadable_targets(registry: Registry) -> list[type[Q35cTarget]]:
    """The class of every registered target that loads, in name order (a broken plugin
    target is reported when it is asked for by name, not here)."""
    classes = []
    for name in sorted(registry.targets):
        try:
            classes.append(load_target_class(registry, name))
        except Q35cError:
            continue
    return classes


def target_pipeline(target: Q35cTarget, registry: Registry, shape_only: bool = False
                    ) -> list[ModulePass]:
    """The passes `target` declares, after the user's pipeline (one line names a bad one)."""
    spec = target.pipeline(shape_only)
    if not spec:
        return []
    try:
        return build_pipeline(spec, registry, verify=False)
    except Q35cError as err:
        raise Q35cError(f"target {target.name}: pipeline '{spec}': {err}") from None


def check_accepted_ops(target: Q35cTarget, module: ModuleOp, path: Path,
                       entry: str | None = None) -> None:
    """Every op in the body of the entry function must be one `target` accepts; all others
    are reported in one line, by op name, with their source locations."""
    accepted = target.accepted_ops()
    if accepted is None:
        return
    from q35c.compiler.entry import entry_function
    from q35c.compiler.ir_attrs import op_key, origin_of

    try:
        fn = entry_function(module, entry)
    except Exception:
        return  # no entry function: the target reports that itself
    found: dict[str, list[str]] = {}
    for index, op in enumerate(fn.body.block.ops):
        if op_key(op) not in accepted:
            where = origin_of(op) or f"op {index} of @{fn.sym_name.data}"
            found.setdefault(op_key(op), []).append(where)
    not_raised = fn.attributes.get("q35c.not_raised")
    if isinstance(not_raised, StringAttr):
        # raise-fortran-tensors kept the function as it was (loops, memref arguments): say
        # which loop, and why
        line, sep, reason = not_raised.data.partition(": ")
        where = f"{path}:{line.removeprefix('line ')}" if sep and line.startswith("line ") \
            else str(path)
        reason = reason if sep and line.startswith("line ") else not_raised.data
        raise Q35cError(f"{where}: target {target.name} cannot raise "
                        f"'{fn.sym_name.data}' to tensor ops: {reason}")
    if found:
        parts = []
        for name, places in sorted(found.items()):
            shown = ", ".join(places[:3]) + (", ..." if len(places) > 3 else "")
            parts.append(f"{name} x{len(places)} ({shown})")
        raise Q35cError(f"{path}: target {target.name} does not support: {'; '.join(parts)}")


@dataclass
class Options:
    target: str | None = None
    """None: COMPILE_TARGET for compiling, RUN_TARGET for running (q35c.targets)."""
    passes: str | None = None
    dump_ir: Path | None = None
    print_ir_after_all: bool = False
    entry: str | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    given_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Shapes of the arrays a run was given (`run_file`): they bind dynamic input dims."""
    keep_float: str | None = None
    report: bool = False
    """Print the per-layer verification table (`--report`) after compiling."""
    shape_only: bool = False
    """`--shape-only`: import shapes and types only, never weight data (ONNX input; targets
    whose `supports_shape_only` is set). `default` then omits the verification passes."""
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES
    """`--max-tensor-bytes`: the frontends' size limit (FrontendOptions.max_tensor_bytes)."""
    calibration: str | None = None
    """`--calibration`: a statistics .npz for `quantize-weights` (compiler/calibration.py)."""
    bpw: float | None = None
    """`--bpw`: the bit budget per matmul weight of `quantize-weights`."""
    group_for: str | None = None
    """`--group-for`: per-weight group sizes of `quantize-weights` (`REGEX=G;...`)."""
    sources: tuple[Path, ...] = ()
    """Further Fortran inputs whose modules the input uses (FrontendOptions.sources)."""
    include_dirs: tuple[Path, ...] = ()
    """`-I DIR` (FrontendOptions.include_dirs)."""
    bindings: dict[str, str] = field(default_factory=dict)
    """`--bind NAME=VALUE` (FrontendOptions.bindings)."""


SHAPE_ONLY_INPUTS = (".onnx",)
FORTRAN_SUFFIXES = (".f90", ".f95", ".f03", ".f08")


def compile_to_module(path: Path, options: Options, target: Q35cTarget | None = None
                      ) -> tuple[Context, ModuleOp]:
    """Frontend, the user's pipeline, then `target`'s own pipeline and its accepted-ops
    check: the verified module the target will see."""
    registry = load_registry()
    ctx = make_context(registry)
    passes = build_pipeline(options.passes, registry, options.keep_float,
                            verify=not options.shape_only, calibration=options.calibration,
                            bpw=options.bpw, group_for=options.group_for)
    if target is not None:
        passes += target_pipeline(target, registry, options.shape_only)
    if options.shape_only and path.suffix.lower() not in SHAPE_ONLY_INPUTS:
        raise Q35cError(f"{path}: --shape-only imports ONNX models only (.onnx), not "
                        f"'{path.suffix}'")
    fortran_only = [flag for flag, given in (("further inputs", options.sources),
                                             ("-I", options.include_dirs),
                                             ("--bind", options.bindings)) if given]
    if fortran_only and path.suffix.lower() not in FORTRAN_SUFFIXES:
        raise Q35cError(f"{path}: {fortran_only[0]}: only for Fortran inputs "
                        f"({', '.join(FORTRAN_SUFFIXES)}), not '{path.suffix}'")
    for source in options.sources:
        if source.suffix.lower() not in FORTRAN_SUFFIXES:
            raise Q35cError(f"{source}: a further input must be a Fortran source "
                            f"({', '.join(FORTRAN_SUFFIXES)})")
        if not source.is_file():
            raise Q35cError(f"{source}: no such file")
    module = load_input(path, ctx, FrontendOptions(shapes=options.shapes,
                                                   given_shapes=options.given_shapes,
                                                   shape_only=options.shape_only,
                                                   max_tensor_bytes=options.max_tensor_bytes,
                                                   sources=options.sources,
                                                   include_dirs=options.include_dirs,
                                                   bindings=options.bindings,
                                                   entry=options.entry))
    dumper = IRDumper(options.dump_ir) if options.dump_ir else None
    run_pipeline(ctx, module, passes, dumper=dumper,
                 print_after_all=options.print_ir_after_all, registry=registry)
    if options.entry is not None:
        select_entry(module, path, options.entry)
    if target is not None:
        check_accepted_ops(target, module, path, options.entry)
    return ctx, module


def select_entry(module: ModuleOp, path: Path, entry: str) -> None:
    """`--entry NAME`: NAME must be a function of the module (else a one-line error); it is
    recorded as the module's `q35c.entry` attribute, which every target's choice of entry
    function (`entry.entry_function`) honours."""
    from xdsl.dialects.builtin import StringAttr

    from q35c.compiler.entry import ENTRY_ATTR, EntryError, entry_function

    try:
        entry_function(module, entry)
    except EntryError as err:
        raise Q35cError(f"{path}: --entry {entry}: {first_line(err)}") from None
    module.attributes[ENTRY_ATTR] = StringAttr(entry)


def print_report(module: ModuleOp, stream) -> None:
    """The `--report` table: one row per quantized matmul, from the verification attributes."""
    from q35c.passes.verify_quant_error import report_table

    stream.write(report_table(module))
    stream.flush()


def _import_body(request):
    """The ONNX frontend's body importer, imported when a target first asks for a body."""
    from q35c.compiler.frontends.onnx.bodies import import_body

    return import_body(request)


def in_target(path: Path, call, *args):
    """`call(*args)`, a target's write or run, with its errors naming the input file: a
    target's lowering knows the op and node that it refuses, not the file they came from."""
    from q35c.compiler.subgraphs import body_importer
    from q35c.semantics import SourceLineError

    try:
        with body_importer(_import_body):  # If/Loop/Scan bodies (compiler/subgraphs.py)
            return call(*args)
    except SourceLineError:  # located at a line of the source: run_file names the file
        raise
    except Q35cError as err:
        message = str(err)
        if message.startswith(f"{path}:") or message.startswith(f"{path} "):
            raise
        raise Q35cError(f"{path}: {message}") from None


def compile_file(path: Path, out_dir: Path | None, options: Options, stdout=sys.stdout) -> None:
    """`q35c INPUT --target T -o OUT` (with --shape-only, what the target writes then)."""
    target = get_target(options.target or COMPILE_TARGET, shape_only=options.shape_only)
    ctx, module = compile_to_module(path, options, target)
    store = store_of(module)
    if options.shape_only:
        if out_dir is None:
            target.emit_shape_only(ctx, module, stdout, options.entry)
        else:
            write_atomically(out_dir, lambda tmp: in_target(
                path, target.write_shape_only, ctx, module, store, tmp, path.stem,
                options.entry))
        return
    if out_dir is None:
        if options.report:  # on stderr: the IR itself goes to stdout
            print_report(module, sys.stderr)
        target.emit(ctx, module, stdout)
        return
    write_atomically(out_dir, lambda tmp: in_target(path, target.write, ctx, module, store,
                                                    tmp, path.stem))
    if options.report:
        print_report(module, stdout)


def report_directory(out_dir: Path, registry: Registry | None = None) -> Path:
    """`q35c report OUT`: the report of the target whose output marker is in OUT (the only
    target with a report, when none is, so that its message says what is missing)."""
    registry = registry or load_registry()
    if not out_dir.is_dir():
        raise Q35cError(f"{out_dir}: no such directory")
    reporting = [cls for cls in loadable_targets(registry) if cls.output_markers]
    found = [cls for cls in reporting
             if any((out_dir / marker).exists() for marker in cls.output_markers)]
    if not found and len(reporting) == 1:
        found = reporting
    if not found:
        expected = "; ".join(f"{cls.name}: {' or '.join(cls.output_markers)}"
                             for cls in reporting)
        raise Q35cError(f"{out_dir}: no target output to report on ({expected})")
    return found[0].report(out_dir)


def output_file_stem(name: str) -> str:
    """A file name for tensor `name` that stays inside the output directory
    (`codegen_names.file_stem`: model value names may contain `/` or `..`)."""
    return file_stem(name)


def run_file_stems(outputs: Iterable[str], inputs: Iterable[str]) -> dict[tuple[str, str], str]:
    """`q35c run`'s file stem of every ("output" | "input", name): unique, also on
    case-insensitive file systems; outputs first, so their files do not depend on which
    inputs were given (`codegen_names.file_stems`)."""
    keys = [("output", n) for n in outputs] + [("input", n) for n in inputs]
    return dict(zip(keys, file_stems([n for _, n in keys])))


def _collision_note(stems: dict[tuple[str, str], str], written: set[tuple[str, str]]) -> str:
    """One line naming the written tensors whose file got a `~N` suffix ('' if none)."""
    renamed = [f"{kind} '{plain_text(name)}' -> {stems[kind, name]}.npy"
               for kind, name in stems if (kind, name) in written and "~" in stems[kind, name]]
    if not renamed:
        return ""
    return ("q35c: note: tensor names that map to the same file name (after replacing "
            "characters outside letters, digits, '_', '-', '.', ignoring case): "
            + ", ".join(renamed))


def run_file(path: Path, inputs: dict[str, np.ndarray], out_dir: Path, options: Options,
             seed: int = 0, max_steps: int | None = None) -> dict[str, np.ndarray]:
    """`q35c run INPUT`: compile, execute on `inputs` (missing ones drawn from `seed`), save.
    An interpreted run stops after `max_steps` steps (`--max-steps`; default
    `q35c.semantics.DEFAULT_MAX_STEPS`)."""
    from xdsl.dialects.builtin import MemRefType

    from q35c.compiler.entry import (
        argument_attr_strings,
        argument_names,
        entry_function,
        memref_argument_shape,
        result_names,
    )
    from q35c.compiler.tensors import numpy_dtype
    from q35c.semantics import DEFAULT_MAX_STEPS, SourceLineError, step_limit

    target = get_target(options.target or RUN_TARGET)
    options = dataclasses.replace(options, given_shapes={  # sequences (lists) bind nothing
        name: tuple(value.shape) for name, value in inputs.items()
        if isinstance(value, (np.ndarray, np.generic))})
    ctx, module = compile_to_module(path, options, target)
    try:
        fn = entry_function(module, options.entry)
    except Exception as err:
        raise Q35cError(f"{path}: {first_line(err)}") from None
    generated: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(seed)
    intents = argument_attr_strings(fn, "q35c.intent")
    for index, (name, arg) in enumerate(zip(argument_names(fn), fn.args)):
        if name in inputs or intents[index] == "out":  # the target allocates outputs
            continue
        if isinstance(arg.type, MemRefType):  # Fortran arrays: shapes may name scalars
            shape = memref_argument_shape(fn, index, {**inputs, **generated})
            if shape is None:
                raise Q35cError(f"{path}: input '{name}' must be given: its shape depends "
                                "on values that are not inputs")
        else:
            shape = tuple(arg.type.get_shape()) if hasattr(arg.type, "get_shape") else ()
        element = arg.type.get_element_type() if shape or hasattr(arg.type, "get_shape") \
            else arg.type
        dtype = numpy_dtype(element)
        if np.issubdtype(dtype, np.floating):
            generated[name] = rng.standard_normal(shape).astype(dtype)
        else:
            # Small non-negative values: valid token ids and indices for any table >= 16.
            generated[name] = rng.integers(0, 16, size=shape).astype(dtype)
    unknown = sorted(set(inputs) - set(argument_names(fn)))
    if unknown:
        raise Q35cError(f"{path}: unknown input(s) {', '.join(unknown)}; the entry takes "
                        f"{', '.join(argument_names(fn))}")
    if options.report:
        print_report(module, sys.stdout)
    with step_limit(DEFAULT_MAX_STEPS if max_steps is None else max_steps):
        try:
            outputs = in_target(path, target.run, ctx, module, store_of(module),
                                {**inputs, **generated}, options.entry)
        except SourceLineError as err:  # a run-time error at a line of the source
            raise Q35cError(f"{err.file or path}:{err.line}: {err.message}") from None

    names = result_names(fn)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise Q35cError(f"{path}: several outputs are named '{plain_text(twice[0])}'; "
                        "`q35c run` needs distinct output names")
    stems = run_file_stems(outputs, argument_names(fn))
    files = {stems["output", name]: value for name, value in outputs.items()}
    files.update({stems["input", name]: value for name, value in generated.items()})

    def write(tmp: Path) -> None:
        for stem, value in files.items():
            np.save(tmp / f"{stem}.npy", np.asarray(value))

    write_atomically(out_dir, write)
    note = _collision_note(stems, {("output", n) for n in outputs}
                           | {("input", n) for n in generated})
    if note:
        print(note, file=sys.stderr)
    return outputs
