"""The `q35c` command line: a thin click shell over q35c.compiler.driver.

    q35c INPUT [--target T] [-o OUT] [--passes SPEC] [--dump-ir DIR] [--print-ir-after-all]
    q35c run INPUT [--target T] [--input NAME=FILE.npy ...] [--seed N] -o OUTDIR
    q35c passes        list built-in and plugin passes
    q35c targets       list built-in and plugin targets
    q35c irdl          print the IRDL export of q35c's dialects
    q35c inspect MODEL.onnx [--shape ...] [--keep-float REGEX]   summarize a model
    q35c MODEL.onnx --target T --shape-only -o OUT   no weight data read (groq: multi-chip plan)
    q35c report OUT    the report of the target that wrote OUT (groq: OUT/timeline.html)
    q35c generate MODEL --tokenizer T --prompt TEXT   text from a decode graph with a KV cache
    q35c perplexity MODEL --tokenizer T --text FILE   sliding-window perplexity

User errors print one line, `q35c: error: ...`, and exit with code 2; `--debug` shows the
Python traceback instead.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import numpy as np

from q35c.compiler.diagnostics import Q35cError, first_line
from q35c.compiler.files import open_input, set_input_limit
from q35c.targets import COMPILE_TARGET, RUN_TARGET

EXIT_USER_ERROR = 2


class _DefaultCommandGroup(click.Group):
    """`q35c INPUT ...` means `q35c compile INPUT ...` unless INPUT names a subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h",
                                                                       "--version"):
            args = ["compile", *args]
        return super().parse_args(ctx, args)


def _fail(message: str) -> None:
    click.echo(f"q35c: error: {message}", err=True)
    sys.exit(EXIT_USER_ERROR)


def _guarded(debug: bool, action) -> None:
    """Run `action`, turning errors into one-line messages unless --debug."""
    try:
        action()
    except Q35cError as err:
        if debug:
            raise
        _fail(str(err))
    except KeyboardInterrupt as err:  # SIGINT, or SIGTERM/SIGHUP during a write
        sys.exit(128 + getattr(err, "signum", 2))
    except Exception as err:
        if debug:
            raise
        if isinstance(err, OSError) and err.filename is not None:  # a file-system mistake
            _fail(f"{err.filename}: {err.strerror or type(err).__name__}")
        _fail(f"internal error: {type(err).__name__}: {first_line(err)} "
              "(run with --debug for the traceback)")


_DEBUG = click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
_GROUP_FOR = click.option(
    "--group-for", metavar="REGEX=G;...",
    help="Q3P5 group size G for each matmul weight whose name REGEX finds (first match "
         "wins; e.g. 'v_proj=16;q_proj=64'), the others 32; not with --bpw "
         "(docs/quantization.md).")


def _set_input_limit(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """`--max-input-bytes N[K|M|G|T]`: the size limit of every input file for this run."""
    if value is None:
        limit = None
    else:
        text = value.strip().upper().removesuffix("B").removesuffix("I")
        scale = 1024 ** ("KMGT".index(text[-1]) + 1) if text and text[-1] in "KMGT" else 1
        digits = text[:-1] if scale > 1 else text
        if not digits.isdigit() or int(digits) <= 0:
            raise click.BadParameter(f"expects a positive size such as 1000000 or 40G, "
                                     f"got '{value}'")
        limit = int(digits) * scale
    set_input_limit(limit)


_MAX_INPUT = click.option(
    "--max-input-bytes", metavar="SIZE", expose_value=False, callback=_set_input_limit,
    help="Refuse input files larger than SIZE bytes (suffix K, M, G, T: powers of 1024); "
         "default 64M for .f90/.mlir, 16G for .onnx, external data, .q35w and .npy.")
_PIPELINE_OPTIONS = [
    click.option("--passes", "passes", metavar="SPEC",
                 help="Pass pipeline in xDSL syntax (e.g. 'canonicalize,my-pass{opt=1}'); "
                      "the element 'default' expands to the default pipeline."),
    click.option("--dump-ir", type=click.Path(path_type=Path), metavar="DIR",
                 help="Write the IR after every stage to DIR/NN-<stage>.mlir."),
    click.option("--print-ir-after-all", is_flag=True,
                 help="Print the IR after every pass to stderr."),
    click.option("--entry", metavar="NAME", help="Function to compile or run."),
    click.option("-I", "include_dirs", multiple=True, metavar="DIR",
                 type=click.Path(path_type=Path, file_okay=False),
                 help="Fortran: look for the source <module>.f90 of a `use`d module in DIR "
                      "(after the input's directory; repeatable)."),
    click.option("--bind", "bindings", multiple=True, metavar="NAME=VALUE",
                 help="Fortran: give VALUE to the scalar parameter NAME, or to the scalar "
                      "intent(in) argument NAME of the entry (which then is no argument), "
                      "so that shapes using it are static (repeatable)."),
    click.option("--shape", "shapes", multiple=True, metavar="NAME=d1,d2,...",
                 help="Static shape for a model input with dynamic dimensions (repeatable)."),
    click.option("--keep-float", metavar="REGEX",
                 help="Keep weights whose name matches REGEX in float (e.g. 'embed|lm_head')."),
    click.option("--act", type=click.Choice(["float", "int8"]), default="float",
                 show_default=True,
                 help="Activations of quantized matmuls: float, or int8 with int32 "
                      "accumulation (appends int8-activations to the pipeline)."),
    click.option("--max-tensor-bytes", metavar="SIZE", default="1G", show_default=True,
                 help="Largest tensor the frontend may compute at import time (folding) and "
                      "largest static shape of an input or intermediate value, in bytes or "
                      "with a K/M/G/T suffix (powers of 1024); initializers do not count."),
    click.option("--report", is_flag=True,
                 help="Print the per-layer verification table (error bounds, accumulator "
                      "bounds); on stderr when the IR goes to stdout."),
    _MAX_INPUT,
]


def _pipeline_options(fn):
    for option in reversed(_PIPELINE_OPTIONS):
        fn = option(fn)
    return fn


@click.group(cls=_DefaultCommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="q35c")
def main() -> None:
    """q35c: compile quantized neural networks (Q3P5 weights) to accelerator IR.

    Run `q35c INPUT --target T -o OUT` to compile; see the subcommands below for the rest.
    """


@main.command("compile")
@click.argument("input", type=click.Path(path_type=Path))
@click.argument("sources", nargs=-1, type=click.Path(path_type=Path))
@click.option("--target", "-t", default=COMPILE_TARGET, show_default=True,
              help="A target spec such as 'c' or 'groq{chips=2}'; `q35c targets` lists them.")
@click.option("-o", "output", type=click.Path(path_type=Path), metavar="OUT",
              help="Output directory (stdout for text targets when omitted).")
@_pipeline_options
@click.option("--shape-only", is_flag=True,
              help="Never read weight data: import shapes and packed types only (.onnx "
                   "input), for targets that support it: groq writes the multi-chip plan "
                   "(plan.json, report.txt, report.json), mlir the shape-only IR.")
@click.option("--calibration", type=click.Path(path_type=Path), metavar="FILE",
              help="Calibrate the weight quantizer: a text (with --tokenizer) run through the "
                   "float model, or a statistics .npz from `q35c calibrate` "
                   "(docs/quantization.md).")
@click.option("--tokenizer", type=click.Path(path_type=Path), metavar="FILE",
              help="tokenizer.json for a --calibration text.")
@click.option("--bpw", type=click.FloatRange(min=3.5, min_open=True), metavar="B",
              help="Bits per matmul weight (all metadata counted): a Q3P5 group size per "
                   "weight chosen within the budget (docs/quantization.md).")
@_GROUP_FOR
@_DEBUG
def compile_command(input: Path, sources: tuple[Path, ...], target: str,
                    output: Path | None, passes: str | None,
                    dump_ir: Path | None, print_ir_after_all: bool, entry: str | None,
                    include_dirs: tuple[Path, ...], bindings: tuple[str, ...],
                    shapes: tuple[str, ...], keep_float: str | None, act: str,
                    max_tensor_bytes: str, report: bool, shape_only: bool,
                    calibration: Path | None, tokenizer: Path | None, bpw: float | None,
                    group_for: str | None, debug: bool) -> None:
    """Compile INPUT (.onnx, .f90 or .mlir) for a target. Further SOURCES (Fortran) hold
    modules that INPUT uses."""
    from q35c.compiler.calibration import statistics_for
    from q35c.compiler.driver import compile_file

    def action() -> None:
        options = _options(target, passes, dump_ir, print_ir_after_all, entry, shapes,
                           keep_float, report, act, shape_only, max_tensor_bytes)
        _fortran_options(options, sources, include_dirs, bindings)
        options.bpw = bpw
        options.group_for = group_for
        with statistics_for(input, calibration, tokenizer) as statistics:
            options.calibration = statistics
            compile_file(input, output, options, stdout=sys.stdout)

    _guarded(debug, action)


def _fortran_options(options, sources: tuple[Path, ...], include_dirs: tuple[Path, ...],
                     bindings: tuple[str, ...]) -> None:
    options.sources = tuple(sources)
    options.include_dirs = tuple(include_dirs)
    for item in bindings:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise Q35cError(f"--bind expects NAME=VALUE, got '{item}'")
        options.bindings[name.strip()] = value.strip()


def _parse_shapes(values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for item in values:
        name, sep, dims = item.partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 0:
            raise Q35cError(f"--shape expects NAME=d1,d2,... with sizes of 0 or more, "
                            f"got '{item}'")
        shapes[name] = shape
    return shapes


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _parse_size(option: str, text: str) -> int:
    """`1073741824`, `512M`, `4G`, `4GiB` -> bytes (K/M/G/T are powers of 1024)."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = value[-1:] if value[-1:] in _SIZE_UNITS else ""
    number = value[:len(value) - len(unit)]
    if not number.isdigit() or int(number) <= 0:
        raise Q35cError(f"{option} expects a positive size such as 1073741824, 512M or 4G, "
                        f"got '{text}'")
    return int(number) * _SIZE_UNITS[unit]


def _options(target, passes, dump_ir, print_ir_after_all, entry, shapes, keep_float,
             report=False, act="float", shape_only=False, max_tensor_bytes="1G"):
    from q35c.compiler.driver import Options

    if act == "int8":
        passes = f"{'default' if passes is None else passes},int8-activations"
    return Options(target=target, passes=passes, dump_ir=dump_ir,
                   print_ir_after_all=print_ir_after_all, entry=entry,
                   shapes=_parse_shapes(shapes), keep_float=keep_float, report=report,
                   shape_only=shape_only,
                   max_tensor_bytes=_parse_size("--max-tensor-bytes", max_tensor_bytes))


def _parse_inputs(values: tuple[str, ...]) -> dict[str, np.ndarray]:
    inputs = {}
    for item in values:
        name, sep, file = item.partition("=")
        if not sep or not name:
            raise Q35cError(f"--input expects NAME=FILE.npy, got '{item}'")
        literal = _scalar_literal(file)
        if literal is not None and not Path(file).exists():
            inputs[name] = literal  # a scalar argument given as a literal: M=4, eps=1e-5
            continue
        try:
            with open_input(Path(file), text=False) as f:
                inputs[name] = np.load(f, allow_pickle=False)
        except Q35cError as err:
            raise Q35cError(f"--input {name}: {err}") from None
        except (OSError, ValueError, EOFError) as err:
            raise Q35cError(f"--input {name}: cannot load {file}: {first_line(err)}") from None
    return inputs


def _scalar_literal(text: str) -> np.ndarray | None:
    """`4` -> int64 scalar, `1e-5` / `0.5` -> float64 scalar (cast to the argument's type
    by the target), anything else -> None."""
    for kind in (int, float):
        try:
            return np.asarray(kind(text))
        except ValueError:
            continue
    return None


@main.command("run")
@click.argument("input", type=click.Path(path_type=Path))
@click.argument("sources", nargs=-1, type=click.Path(path_type=Path))
@click.option("--target", "-t", default=RUN_TARGET, show_default=True,
              help="Target that executes (`q35c targets` lists them).")
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy",
              help="An input tensor, or a scalar literal (NAME=4); inputs not given are "
                   "drawn from --seed and saved.")
@click.option("--seed", default=0, show_default=True, help="Seed for generated inputs.")
@click.option("-o", "output", type=click.Path(path_type=Path), required=True, metavar="OUTDIR",
              help="Directory for <output-name>.npy (and generated inputs).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stop an interpreted run after N steps (executed ops and loop "
                   "iterations) with an error at the op and source line it reached; "
                   "default 100000000.")
@_pipeline_options
@_DEBUG
def run_command(input: Path, sources: tuple[Path, ...], target: str, inputs: tuple[str, ...],
                seed: int, output: Path,
                max_steps: int | None, passes: str | None, dump_ir: Path | None,
                print_ir_after_all: bool, entry: str | None, include_dirs: tuple[Path, ...],
                bindings: tuple[str, ...], shapes: tuple[str, ...],
                keep_float: str | None, act: str, max_tensor_bytes: str, report: bool,
                debug: bool) -> None:
    """Compile INPUT (with further Fortran SOURCES of its modules) and execute it; write
    each output as OUTDIR/<name>.npy."""
    from q35c.compiler.codegen_names import plain_text
    from q35c.compiler.driver import run_file, run_file_stems

    def action() -> None:
        options = _options(target, passes, dump_ir, print_ir_after_all, entry, shapes,
                           keep_float, report, act, max_tensor_bytes=max_tensor_bytes)
        _fortran_options(options, sources, include_dirs, bindings)
        outputs = run_file(input, _parse_inputs(inputs), output, options, seed=seed,
                           max_steps=max_steps)
        stems = run_file_stems(outputs, [])
        for name, value in outputs.items():
            path = output / f"{stems['output', name]}.npy"
            click.echo(f"{plain_text(name)}: {np.asarray(value).dtype}"
                       f"{list(np.shape(value))} -> {path}")

    _guarded(debug, action)


_LLM_OPTIONS = [
    click.option("--tokenizer", type=click.Path(path_type=Path), required=True,
                 metavar="FILE", help="tokenizer.json (tokenizer_config.json beside it gives "
                                      "the end-of-sequence token and the chat template)."),
    click.option("--target", "-t", default="interp", show_default=True,
                 type=click.Choice(["interp", "c", "cuda"]), help="Where the model runs."),
    click.option("--context", type=click.IntRange(min=2), default=None, metavar="N",
                 help="Cache slots the model is compiled with: the maximum context "
                      "[generate: 256; perplexity: --context]."),
    click.option("--prefill-chunk", type=click.IntRange(min=1), default=1, show_default=True,
                 metavar="K", help="Tokens per call when prefilling (K > 1 compiles a "
                                   "second graph for K tokens)."),
    click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N",
                 help="OpenMP threads of the c target."),
    click.option("--passes", "passes", metavar="SPEC",
                 help="Pass pipeline (as in compile; '' imports the float model as is)."),
    click.option("--keep-float", metavar="REGEX",
                 help="Keep weights whose name matches REGEX in float."),
    click.option("--act", type=click.Choice(["float", "int8"]), default="float",
                 show_default=True, help="Activations of quantized matmuls."),
    click.option("--calibration", type=click.Path(path_type=Path), metavar="FILE",
                 help="Calibrate the weight quantizer on a text (tokenized with --tokenizer) "
                      "or a statistics .npz from `q35c calibrate`."),
    click.option("--bpw", type=click.FloatRange(min=3.5, min_open=True), metavar="B",
                 help="Bits per matmul weight: a Q3P5 group size per weight within B."),
    _GROUP_FOR,
    _MAX_INPUT,
]


def _llm_options(fn):
    for option in reversed(_LLM_OPTIONS):
        fn = option(fn)
    return fn


def _decoder(model: Path, target: str, context: int, prefill_chunk: int,
             threads: int | None, passes: str | None, keep_float: str | None, act: str,
             report: bool = False, calibration: Path | None = None,
             tokenizer: Path | None = None, bpw: float | None = None,
             group_for: str | None = None):
    """Compile MODEL once per graph size (1 token, and `prefill_chunk` tokens)."""
    from q35c.compiler.calibration import statistics_for
    from q35c.compiler.generate import CompileRequest, Decoder, compile_step

    start = time.perf_counter()
    with statistics_for(model, calibration, tokenizer) as statistics:
        request = CompileRequest(target=target, passes=passes, act=act, keep_float=keep_float,
                                 context=context, threads=threads, calibration=statistics,
                                 bpw=bpw, group_for=group_for)
        steps = {1: compile_step(model, request, 1)}
        if prefill_chunk > 1 and not model.is_dir():
            steps[prefill_chunk] = compile_step(model, request, prefill_chunk)
    storage = steps[1].storage
    click.echo(f"q35c: compiled {model} for --target {target} ({steps[1].signature.layers} "
               f"layers, {steps[1].signature.past} cache slots) in "
               f"{time.perf_counter() - start:.1f} s", err=True)
    if storage is not None:
        click.echo(f"q35c: {storage.line()}", err=True)
    return Decoder(steps)


@main.command("calibrate")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--text", "text_files", type=click.Path(path_type=Path), required=True,
              multiple=True, metavar="FILE",
              help="Plain calibration text, not the text you evaluate on (repeatable: each "
                   "text is cut into its own windows).")
@click.option("--tokenizer", type=click.Path(path_type=Path), required=True, metavar="FILE",
              help="tokenizer.json of the model.")
@click.option("-o", "output", type=click.Path(path_type=Path), required=True,
              metavar="STATS.npz", help="Where to write the statistics.")
@click.option("--window", type=click.IntRange(min=2), default=256, show_default=True,
              metavar="N", help="Tokens per run of the float model.")
@_MAX_INPUT
@_DEBUG
def calibrate_command(model: Path, text_files: tuple[Path, ...], tokenizer: Path,
                      output: Path, window: int, debug: bool) -> None:
    """Run the float MODEL (an ONNX language model) on the interpreter over a text and
    write each matmul weight's input statistics, for `--calibration STATS.npz`."""
    from q35c.compiler.calibration import calibrate_text

    def action() -> None:
        start = time.perf_counter()
        stats = calibrate_text(model, list(text_files), tokenizer, output, window)
        click.echo(f"q35c: calibrated {len(stats.names)} weights ({len(stats.grams)} distinct "
                   f"inputs, {max(stats.rows, default=0)} tokens) in "
                   f"{time.perf_counter() - start:.1f} s -> {output}", err=True)

    _guarded(debug, action)


@main.command("generate")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--prompt", required=True, help="The prompt text.")
@click.option("--max-new-tokens", type=click.IntRange(min=0), default=32, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="0: greedy (deterministic); > 0: sample from softmax(logits / T).")
@click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0,
              show_default=True, help="Nucleus sampling: the smallest set of tokens whose "
                                      "probability reaches P.")
@click.option("--seed", default=0, show_default=True, help="Seed of the sampler.")
@click.option("--chat", is_flag=True, help="Apply the tokenizer's chat template.")
@_llm_options
@_DEBUG
def generate_command(model: Path, prompt: str, max_new_tokens: int, temperature: float,
                     top_p: float, seed: int, chat: bool, tokenizer: Path, target: str,
                     context: int | None, prefill_chunk: int, threads: int | None,
                     passes: str | None, keep_float: str | None, act: str,
                     calibration: Path | None, bpw: float | None, group_for: str | None,
                     debug: bool) -> None:
    """Generate text with a decoder-only language model (a decode graph with a KV cache):
    the text goes to stdout as it is generated, speeds to stderr (docs/generate.md)."""
    from q35c.compiler.generate import Sampler, Timing, Tokenizer, generate_ids, stream_text

    def action() -> None:
        tok = Tokenizer(tokenizer)
        ids = tok.encode(tok.chat(prompt) if chat else prompt)
        decoder = _decoder(model, target, context or 256, prefill_chunk, threads, passes,
                           keep_float, act, calibration=calibration, tokenizer=tokenizer,
                           bpw=bpw, group_for=group_for)
        timing = Timing()
        try:
            stream_text(tok, generate_ids(decoder, ids, max_new_tokens,
                                          Sampler(temperature, top_p, seed), tok.stop_ids(),
                                          timing), sys.stdout)
        finally:
            for step in decoder.steps.values():
                step.close()
        click.echo("")
        click.echo(f"q35c: {timing.line()}", err=True)

    _guarded(debug, action)


@main.command("perplexity")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--text", "text_file", type=click.Path(path_type=Path), required=True,
              metavar="FILE", help="Plain text to score.")
@click.option("--stride", type=click.IntRange(min=1), default=None, metavar="S",
              help="Tokens between window starts [--context / 2].")
@_llm_options
@_DEBUG
def perplexity_command(model: Path, text_file: Path, stride: int | None, tokenizer: Path,
                       target: str, context: int | None, prefill_chunk: int,
                       threads: int | None, passes: str | None, keep_float: str | None,
                       act: str, calibration: Path | None, bpw: float | None,
                       group_for: str | None, debug: bool) -> None:
    """Sliding-window perplexity of FILE (windows of --context tokens every --stride
    tokens, each scoring only the tokens past the previous window; docs/generate.md)."""
    from q35c.compiler.generate import Tokenizer, check_windows, perplexity
    from q35c.compiler.progress import progress_bar

    def action() -> None:
        window = context or 256
        check_windows(window, stride or max(window // 2, 1))
        tok = Tokenizer(tokenizer)
        with open_input(text_file, text=True) as f:
            ids = tok.encode(f.read().decode("utf-8", errors="replace"))
        decoder = _decoder(model, target, window, prefill_chunk, threads, passes,
                           keep_float, act, calibration=calibration, tokenizer=tokenizer,
                           bpw=bpw, group_for=group_for)
        start = time.perf_counter()
        try:
            with progress_bar(max(len(ids) - 1, 0), "perplexity") as bar:
                result = perplexity(decoder, ids, window, stride or max(window // 2, 1),
                                    bar.update)
        finally:
            for step in decoder.steps.values():
                step.close()
        click.echo(f"perplexity {result.ppl:.4f} over {result.tokens} scored tokens "
                   f"({len(ids)} tokens of text, context {window}, stride "
                   f"{stride or max(window // 2, 1)})")
        click.echo(f"q35c: scored in {time.perf_counter() - start:.1f} s", err=True)

    _guarded(debug, action)


@main.command("passes")
@_DEBUG
def passes_command(debug: bool) -> None:
    """List available passes: q35c's, xDSL's and plugins'."""
    from q35c.compiler.registry import BUILTIN_PLUGINS, load_registry

    def action() -> None:
        registry = load_registry()
        for name in sorted(registry.passes):
            plugin = registry.origin[f"pass:{name}"]
            try:
                doc = (registry.passes[name]().__doc__ or "").strip().splitlines()
                summary = doc[0] if doc else ""
            except Exception as err:
                summary = f"(fails to load: {type(err).__name__}: {first_line(err)})"
            origin = "" if plugin in BUILTIN_PLUGINS else f" [plugin {plugin}]"
            click.echo(f"{name:40s} {plugin if plugin in BUILTIN_PLUGINS else '':5s} "
                       f"{summary}{origin}")
        for plugin, why in sorted(registry.broken.items()):
            click.echo(f"warning: plugin '{plugin}' skipped: {why}", err=True)

    _guarded(debug, action)


@main.command("inspect")
@click.argument("input", type=click.Path(path_type=Path))
@click.option("--shape", "shapes", multiple=True, metavar="NAME=d1,d2,...",
              help="Static shape for a model input with dynamic dimensions (repeatable); "
                   "unbound dynamic dimensions are imported as 1.")
@click.option("--keep-float", metavar="REGEX",
              help="Weights whose name matches REGEX stay float, as in compile.")
@_MAX_INPUT
@_DEBUG
def inspect_command(input: Path, shapes: tuple[str, ...], keep_float: str | None,
                    debug: bool) -> None:
    """Summarize an ONNX model: ops, parameters, what would be quantized, bytes."""
    from q35c.compiler.frontends.onnx.inspect import inspect_model

    _guarded(debug, lambda: click.echo(
        inspect_model(input, _parse_shapes(shapes), keep_float).text(), nl=False))


@main.command("targets")
@_DEBUG
def targets_command(debug: bool) -> None:
    """List available targets: q35c's, plugins' and the planned ones."""
    from q35c.compiler.driver import load_target_class
    from q35c.compiler.registry import load_registry
    from q35c.compiler.universe import PLANNED_TARGETS

    def action() -> None:
        registry = load_registry()
        for name in sorted(registry.targets):
            plugin = registry.plugin_of("target", name)
            try:
                cls = load_target_class(registry, name)
                doc = (cls.__doc__ or "").strip().splitlines()
                summary = doc[0] if doc else ""
                if cls.supports_shape_only:
                    summary += " [--shape-only]"
            except Q35cError as err:
                summary = f"(fails to load: {err})"
            origin = f" [plugin {plugin}]" if plugin else ""
            click.echo(f"{name:12s} {summary}{origin}")
        for name, summary in sorted(PLANNED_TARGETS.items()):
            if name not in registry.targets:
                click.echo(f"{name:12s} (planned, not implemented yet) {summary}")
        for plugin, why in sorted(registry.broken.items()):
            click.echo(f"warning: plugin '{plugin}' skipped: {why}", err=True)

    _guarded(debug, action)


@main.command("report")
@click.argument("out_dir", type=click.Path(path_type=Path))
@_DEBUG
def report_command(out_dir: Path, debug: bool) -> None:
    """Write the report of the target that wrote OUT_DIR (groq: OUT_DIR/timeline.html from
    program.json or a --shape-only plan.json)."""
    from q35c.compiler.driver import report_directory

    _guarded(debug, lambda: click.echo(f"wrote {report_directory(out_dir)}"))


@main.command("irdl")
@_DEBUG
def irdl_command(debug: bool) -> None:
    """Print the IRDL export of q35c's dialects (for `mlir-opt --irdl-file=`)."""
    from q35c.compiler.irdl_export import dialects_to_irdl
    from q35c.compiler.universe import DIALECTS

    _guarded(debug, lambda: click.echo(dialects_to_irdl(f() for f in DIALECTS.values()), nl=False))


if __name__ == "__main__":
    main()
