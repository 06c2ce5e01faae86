"""The compile and run API that the CLI (and tests) call.

    load_input  ->  run_pipeline (verify + optional dump after every pass)  ->  target

Everything that can go wrong because of the user's input or a plugin raises `Q35cError`
with one line naming the file and the op, pass or plugin. Outputs are written to a
temporary directory and moved into place only on success, so a failure writes nothing to -o.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.utils.arg_spec import parse_spec
from xdsl.utils.exceptions import VerifyException

from q35c.compiler.diagnostics import Q35cError, first_line
from q35c.compiler.frontends import (
    DEFAULT_MAX_TENSOR_BYTES,
    FRONTENDS,
    PLANNED as PLANNED_FRONTENDS,
    FrontendOptions,
)
from q35c.compiler.ir_text import module_text, referenced_weights
from q35c.compiler.progress import progress_bar
from q35c.compiler.registry import Registry, load_registry
from q35c.compiler.weights import WeightStore, store_of
from q35c.targets import PLANNED as PLANNED_TARGETS, TARGETS
from q35c.targets.target import Q35cTarget

DEFAULT_PIPELINE = "quantize-weights,canonicalize,cse"
"""What `q35c INPUT` runs unless --passes says otherwise; `default` in --passes expands to it."""
VERIFY_PIPELINE = "verify-overflow,verify-quant-error"
"""Part of the default pipeline, but run last: a pipeline that uses `default` (or none) ends
with these, so they check the final IR (e.g. after `default,int8-activations`)."""


def make_context(registry: Registry | None = None) -> Context:
    """A context that knows every registered dialect (loaded lazily on first use)."""
    registry = registry or load_registry()
    ctx = Context()
    for name, factory in registry.dialects.items():
        if registry.plugin_of("dialect", name) is not None:
            factory = functools.partial(_load, registry, "dialect", name, factory)
        ctx.register_dialect(name, factory)
    return ctx


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
                   keep_float: str | None = None, verify: bool = True) -> list[ModulePass]:
    """Pass instances for a pipeline spec in xDSL syntax (None means the default pipeline).

    `keep_float` (from --keep-float) sets the option of that name on every
    `quantize-weights` in the pipeline. `verify=False` leaves the verification passes out
    of `default` (--shape-only: they read weight data).
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
        pass_type = _load(registry, "pass", pass_spec.name, registry.passes[pass_spec.name])
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
            note = _plugin_note(registry, "pass", pass_spec.name)
            raise Q35cError(f"--passes: {pass_spec.name}{note}: {_describe(err)}") from None
        if keep_float and pass_spec.name == "quantize-weights":
            pass_ = dataclasses.replace(pass_, keep_float=keep_float)
        passes.append(pass_)
    return passes


def _load(registry: Registry, kind: str, name: str, factory):
    """`factory()` (a pass, dialect or target of the registry); whatever it raises, except
    Ctrl-C, becomes an error naming it and its plugin, so plugin code cannot end q35c."""
    try:
        return factory()
    except KeyboardInterrupt:
        raise
    except BaseException as err:
        raise Q35cError(f"{kind} '{name}'{_plugin_note(registry, kind, name)} failed to load: "
                        f"{_describe(err)}") from None


def _describe(err: BaseException) -> str:
    """`Type: first line` of an exception, with the exit code of a SystemExit."""
    if isinstance(err, SystemExit):
        return f"SystemExit (it called sys.exit({err.code!r}))"
    return f"{type(err).__name__}: {first_line(err)}"


def _plugin_note(registry: Registry, kind: str, name: str) -> str:
    plugin = registry.plugin_of(kind, name)
    return f" (plugin '{plugin}')" if plugin else ""


@dataclass
class IRDumper:
    """Writes `NN-<pass>.mlir` after each stage into `directory`, and the weights at the end."""

    directory: Path
    weights: set[str] = field(default_factory=set)
    WEIGHTS_FILE = "weights.q35w"

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("[0-9][0-9]-*.mlir"):
            stale.unlink()

    def dump(self, index: int, label: str, spec: str, module: ModuleOp) -> None:
        names = referenced_weights(module)
        self.weights |= names
        text = module_text(module, weights_file=self.WEIGHTS_FILE if names else None)
        path = self.directory / f"{index:02d}-{label}.mlir"
        path.write_text(f"// q35c stage {index:02d}: {spec}\n{text}")

    def finish(self, store: WeightStore) -> None:
        if self.weights:
            store.save(self.directory / self.WEIGHTS_FILE, keep=self.weights)


def run_pipeline(ctx: Context, module: ModuleOp, passes: Iterable[ModulePass], *,
                 dumper: IRDumper | None = None, print_after_all: bool = False,
                 registry: Registry | None = None) -> None:
    """Apply `passes` in order, verifying the IR after each one.

    A pass that raises, or that leaves IR the verifier rejects, is reported by name (and
    plugin); no later pass runs.
    """
    registry = registry or load_registry()
    passes = list(passes)
    if dumper:
        dumper.dump(0, "input", "input", module)
    with progress_bar(len(passes), "passes") as bar:
        for index, pass_ in enumerate(passes, 1):
            where = f"pass '{pass_.name}'{_plugin_note(registry, 'pass', pass_.name)}"
            try:
                pass_.apply(ctx, module)
            except (Q35cError, KeyboardInterrupt):
                raise
            except BaseException as err:  # SystemExit and the like from plugin code too
                raise Q35cError(f"{where} failed: {_describe(err)}") from err
            try:
                module.verify()
            except VerifyException as err:
                raise Q35cError(f"{where} produced invalid IR: {first_line(err)}") from None
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


def get_target(name: str, registry: Registry | None = None) -> Q35cTarget:
    """A target instance from a spec such as `mlir` or `groq{chips=2}`."""
    try:
        spec = parse_spec(name)
    except BaseException as err:
        raise Q35cError(f"--target: cannot parse '{name}': {first_line(err)}") from None
    if spec.name in PLANNED_TARGETS:
        raise Q35cError(f"target {spec.name} is not implemented yet")
    if spec.name not in TARGETS:
        known = ", ".join(sorted(TARGETS) + list(PLANNED_TARGETS))
        raise Q35cError(f"unknown target '{spec.name}' (known: {known})")
    return TARGETS[spec.name]().from_spec(spec)


def _publish(tmp: Path, out_dir: Path) -> None:
    """Move every file of `tmp` into `out_dir` (created if needed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in sorted(tmp.iterdir()):
        target = out_dir / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        item.replace(target)


def write_atomically(out_dir: Path, write) -> None:
    """Call `write(tmp_dir)`, then move its files into `out_dir`; on failure write nothing."""
    parent = out_dir.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.", dir=parent) as tmp:
        write(Path(tmp))
        _publish(Path(tmp), out_dir)


@dataclass
class Options:
    target: str | None = None
    """None: `mlir` for compiling, `interp` for running."""
    passes: str | None = None
    dump_ir: Path | None = None
    print_ir_after_all: bool = False
    entry: str | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    keep_float: str | None = None
    report: bool = False
    """Print the per-layer verification table (`--report`) after compiling."""
    shape_only: bool = False
    """`--shape-only`: import shapes and types only, never weight data (ONNX input; targets
    in SHAPE_ONLY_TARGETS). `default` then omits the verification passes."""
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES
    """`--max-tensor-bytes`: the frontends' size limit (FrontendOptions.max_tensor_bytes)."""


SHAPE_ONLY_TARGETS = ("groq", "mlir")
"""Targets that accept --shape-only: groq writes the multi-chip plan, mlir the IR with a
store of shape-only entries."""
SHAPE_ONLY_INPUTS = (".onnx",)


def compile_to_module(path: Path, options: Options) -> tuple[Context, ModuleOp]:
    """Frontend and pipeline: the verified module the target will see."""
    registry = load_registry()
    ctx = make_context(registry)
    passes = build_pipeline(options.passes, registry, options.keep_float,
                            verify=not options.shape_only)
    if options.shape_only and path.suffix.lower() not in SHAPE_ONLY_INPUTS:
        raise Q35cError(f"{path}: --shape-only imports ONNX models only (.onnx), not "
                        f"'{path.suffix}'")
    module = load_input(path, ctx, FrontendOptions(shapes=options.shapes,
                                                   shape_only=options.shape_only,
                                                   max_tensor_bytes=options.max_tensor_bytes))
    dumper = IRDumper(options.dump_ir) if options.dump_ir else None
    run_pipeline(ctx, module, passes, dumper=dumper,
                 print_after_all=options.print_ir_after_all, registry=registry)
    return ctx, module


def print_report(module: ModuleOp, stream) -> None:
    """The `--report` table: one row per quantized matmul, from the verification attributes."""
    from q35c.passes.verify_quant_error import report_table

    stream.write(report_table(module))
    stream.flush()


def _shape_only_plan_args(name: str) -> dict[str, tuple] | None:
    """For --shape-only: the options of a `groq{...}` target spec (None for `mlir`); any
    other target is refused."""
    try:
        spec = parse_spec(name)
    except BaseException as err:
        raise Q35cError(f"--target: cannot parse '{name}': {first_line(err)}") from None
    if spec.name not in SHAPE_ONLY_TARGETS:
        raise Q35cError(f"--shape-only is supported by --target "
                        f"{' and '.join(SHAPE_ONLY_TARGETS)}, not '{spec.name}'")
    return dict(spec.parameters) if spec.name == "groq" else None


def compile_shape_only_plan(path: Path, out_dir: Path | None, options: Options,
                            plan_args: dict[str, tuple], stdout=sys.stdout) -> None:
    """`q35c MODEL.onnx --target groq --shape-only -o OUT`: the multi-chip plan
    (plan.json, report.txt, report.json) from shapes and packed types alone."""
    from q35c.targets.groq.plan import PlanOptions, plan_module

    plan_options = PlanOptions.from_spec_args(plan_args)
    _, module = compile_to_module(path, options)
    plan = plan_module(module, plan_options, entry=options.entry)
    if out_dir is not None:
        write_atomically(out_dir, plan.write)
    stdout.write(plan.text())
    stdout.flush()


def compile_file(path: Path, out_dir: Path | None, options: Options, stdout=sys.stdout) -> None:
    """`q35c INPUT --target T -o OUT`."""
    if options.shape_only:
        plan_args = _shape_only_plan_args(options.target or "mlir")
        if plan_args is not None:
            return compile_shape_only_plan(path, out_dir, options, plan_args, stdout)
    target = get_target(options.target or "mlir")
    ctx, module = compile_to_module(path, options)
    if out_dir is None:
        if options.report:  # on stderr: the IR itself goes to stdout
            print_report(module, sys.stderr)
        target.emit(ctx, module, stdout)
        return
    store = store_of(module)
    write_atomically(out_dir, lambda tmp: target.write(ctx, module, store, tmp, path.stem))
    if options.report:
        print_report(module, stdout)


def output_file_stem(name: str) -> str:
    """A file name for tensor `name` that stays inside the output directory.

    Model value names may contain `/` (torch exporters) or `..`; every character outside
    letters, digits, `_`, `-` and `.` becomes `_`, and a leading dot is escaped too.
    """
    stem = "".join(c if c.isalnum() or c in "_-." else "_" for c in name)
    return "_" + stem if stem.startswith(".") or not stem else stem


def run_file(path: Path, inputs: dict[str, np.ndarray], out_dir: Path, options: Options,
             seed: int = 0) -> dict[str, np.ndarray]:
    """`q35c run INPUT`: compile, execute on `inputs` (missing ones drawn from `seed`), save."""
    from xdsl.dialects.builtin import MemRefType

    from q35c.targets.interp.interpreter import (
        argument_attr_strings, argument_names, entry_function, memref_argument_shape)
    from q35c.compiler.tensors import numpy_dtype

    target = get_target(options.target or "interp")
    ctx, module = compile_to_module(path, options)
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
    outputs = target.run(ctx, module, store_of(module), {**inputs, **generated}, options.entry)

    def write(tmp: Path) -> None:
        for name, value in {**generated, **outputs}.items():
            np.save(tmp / f"{output_file_stem(name)}.npy", np.asarray(value))

    write_atomically(out_dir, write)
    return outputs
