"""C renderers of the CNN kernels (`targets/native/onnx_cnn.py` makes the steps; the
kernels are in `runtime/q35rt_cnn.c`, appended to model.c only when a step uses one)."""

from __future__ import annotations

import numpy as np

from q35c.compiler.codegen_names import c_string
from q35c.targets.c.kernels import renders
from q35c.targets.c.printer import _float_literal, _int_array, ctype

RUNTIME = "q35rt_cnn.c"
POOL_MODES = ("Q35_POOL_MAX", "Q35_POOL_AVG", "Q35_POOL_LP")


def _double_array(values) -> str:
    return "{" + ", ".join(repr(float(v)) for v in values) + "}"


@renders("conv", "conv_transpose", runtime=RUNTIME)
def render_conv(printer, step) -> str:
    x, w, *bias = step.ins
    name = "q35_conv_f32" if step.kernel == "conv" else "q35_conv_transpose_f32"
    b = printer.ptr(bias[0], True) if bias else "NULL"
    return (f"static const int64_t q[] = {_int_array(step.params['q'])};\n"
            f"{name}({printer.ptr(step.outs[0])}, {printer.ptr(x, True)}, "
            f"{printer.ptr(w, True)}, {b}, q);")



@renders("deform_conv", runtime=RUNTIME)
def render_deform_conv(printer, step) -> str:
    x, w, offset, *rest = step.ins
    y, col, prod = step.outs
    p = step.params
    rest_ptrs = iter(printer.ptr(b, True) for b in rest)
    bias = next(rest_ptrs) if p["bias"] else "NULL"
    mask = next(rest_ptrs) if p["mask"] else "NULL"
    return (f"static const int64_t q[] = {_int_array(p['q'])};\n"
            f"if (q35_deform_conv_f32({printer.ptr(y)}, {printer.ptr(x, True)}, "
            f"{printer.ptr(w, True)}, {printer.ptr(offset, True)}, {bias}, {mask}, "
            f"{printer.ptr(col)}, {printer.ptr(prod)}, q) != 0)\n"
            f"    return {printer.prefix}_fail("
            f"{c_string(step.origin + ': a sampling position is not finite')});")

@renders("pool", runtime=RUNTIME)
def render_pool(printer, step) -> str:
    p = step.params
    indices = printer.ptr(step.outs[1]) if len(step.outs) > 1 else "NULL"
    head = (f"static const int64_t sp[] = {_int_array(p['sp'])}, end[] = "
            f"{_int_array(p['end'])};\n")
    if step.ins[0].dtype in (np.uint8, np.int8):  # MaxPool only (the rule checks)
        name = "q35_maxpool_u8" if step.ins[0].dtype == np.uint8 else "q35_maxpool_i8"
        return (f"{head}{name}({printer.ptr(step.outs[0])}, {indices}, "
                f"{printer.ptr(step.ins[0], True)}, {p['planes']}, sp, end, "
                f"{p['storage_order']});")
    return (f"{head}q35_pool_f32({printer.ptr(step.outs[0])}, {indices}, "
            f"{printer.ptr(step.ins[0], True)}, {p['planes']}, sp, end, "
            f"{POOL_MODES[p['mode']]}, {p['count_include_pad']}, {p['p']!r}, "
            f"{p['storage_order']});")


@renders("batch_norm", runtime=RUNTIME)
def render_batch_norm(printer, step) -> str:
    x, scale, bias, mean, var = (printer.ptr(b, True) for b in step.ins)
    p = step.params
    return (f"q35_batch_norm_f32({printer.ptr(step.outs[0])}, {x}, {scale}, {bias}, {mean}, "
            f"{var}, {p['n']}, {p['c']}, {p['inner']}, {_float_literal(p['eps'], 'float')});")


@renders("batch_norm_train", runtime=RUNTIME)
def render_batch_norm_train(printer, step) -> str:
    x, scale, bias, mean, var = (printer.ptr(b, True) for b in step.ins)
    p = step.params
    y, *rest = step.outs
    running = iter(rest)
    run_mean, run_var = (printer.ptr(next(running)) if wanted else "NULL"
                         for wanted in p["running"])
    return (f"q35_batch_norm_train_f32({printer.ptr(y)}, {run_mean}, {run_var}, {x}, "
            f"{scale}, {bias}, {mean}, {var}, {p['n']}, {p['c']}, {p['inner']}, "
            f"{_float_literal(p['eps'], 'float')}, "
            f"{_float_literal(p['momentum'], 'float')});")


@renders("instance_norm", runtime=RUNTIME)
def render_instance_norm(printer, step) -> str:
    x, scale, bias = (printer.ptr(b, True) for b in step.ins)
    p = step.params
    return (f"q35_instance_norm_f32({printer.ptr(step.outs[0])}, {x}, {scale}, {bias}, "
            f"{p['n']}, {p['c']}, {p['inner']}, {_float_literal(p['eps'], 'float')});")


@renders("lrn", runtime=RUNTIME)
def render_lrn(printer, step) -> str:
    p = step.params
    return (f"q35_lrn_f32({printer.ptr(step.outs[0])}, {printer.ptr(step.ins[0], True)}, "
            f"{p['n']}, {p['c']}, {p['inner']}, {p['size']}, "
            f"{_float_literal(p['alpha'], 'float')}, {_float_literal(p['beta'], 'float')}, "
            f"{_float_literal(p['bias'], 'float')});")


@renders("pad", runtime=RUNTIME)
def render_pad(printer, step) -> str:
    x, pads, value, *axes = step.ins
    out = step.outs[0]
    p = step.params
    axes_ptr = printer.ptr(axes[0], True) if axes else "NULL"
    return (f"static const int64_t xdims[] = {_int_array(x.shape or (1,))}, "
            f"ydims[] = {_int_array(out.shape or (1,))};\n"
            f"if (q35_pad({printer.ptr(out)}, {printer.ptr(x, True)}, sizeof({ctype(out)}), "
            f"{len(x.shape)}, xdims, ydims, {printer.ptr(pads, True)}, {p['naxes']}, "
            f"{axes_ptr}, {int(p['axes_i32'])}, {p['mode']}, {printer.ptr(value, True)}) != 0)\n"
            f"    return {printer.prefix}_fail("
            f"{c_string(step.origin + ': the pads do not give the compiled output shape')});")


@renders("resize_axis", runtime=RUNTIME)
def render_resize_axis(printer, step) -> str:
    """Taps as static tables (known scales) or from a `resize_taps` step's buffers."""
    p = step.params
    head, at, wt = "", "at", "wt"
    if "at" in p:
        head = (f"static const int64_t at[] = {_int_array(p['at'])};\n"
                f"static const double wt[] = {_double_array(p['wt'])};\n")
    else:
        at, wt = (printer.ptr(b, True) for b in step.ins[1:3])
    return (f"{head}q35_resize_axis_f32({printer.ptr(step.outs[0])}, "
            f"{printer.ptr(step.ins[0], True)}, {p['outer']}, {p['in_len']}, "
            f"{p['out_len']}, {p['inner']}, {p['taps']}, {at}, {wt}, "
            f"{_float_literal(p['extrapolation'], 'float')});")


@renders("resize_scales", runtime=RUNTIME)
def render_resize_scales(printer, step) -> str:
    p = step.params
    src = printer.ptr(step.ins[0], True)
    return (f"static const int64_t axes[] = {_int_array(p['axes'])}, "
            f"xdims[] = {_int_array(p['xdims'])}, ydims[] = {_int_array(p['ydims'])};\n"
            f"if (q35_resize_scales({printer.ptr(step.outs[0])}, {src}, {int(p['sizes'])}, "
            f"{len(p['xdims'])}, axes, {len(p['axes'])}, xdims, ydims, {p['policy']}) != 0)\n"
            f"    return {printer.prefix}_fail("
            f"{c_string(step.origin + ': the scales or sizes do not give the compiled shape')});")


@renders("resize_taps", runtime=RUNTIME)
def render_resize_taps(printer, step) -> str:
    p = step.params
    at, wt = step.outs
    scale, *roi = step.ins
    roi0 = f"{printer.ptr(roi[0], True)} + {p['roi0']}" if roi else "NULL"
    roi1 = f"{printer.ptr(roi[0], True)} + {p['roi1']}" if roi else "NULL"
    return (f"if (q35_resize_taps({printer.ptr(at)}, {printer.ptr(wt)}, {p['in_len']}, "
            f"{p['out_len']}, {p['taps']}, {printer.ptr(scale, True)}[{p['axis']}], {roi0}, "
            f"{roi1}, {p['coordinate']}, {p['kind']}, {p['nearest']}, {p['cubic_a']!r}, "
            f"{p['exclude_outside']}, {int(p['antialias'])}) != 0)\n"
            f"    return {printer.prefix}_fail("
            f"{c_string(step.origin + ': the scales need a wider antialias filter')});")


@renders("col2im", runtime=RUNTIME)
def render_col2im(printer, step) -> str:
    p = step.params
    x, image, block = (printer.ptr(b, True) for b in step.ins)
    return (f"static const int64_t image[] = {_int_array(p['image'])}, dil[] = "
            f"{_int_array(p['dilations'])}, pads[] = {_int_array(p['pads'])}, strides[] = "
            f"{_int_array(p['strides'])};\n"
            f"if (q35_col2im_f32({printer.ptr(step.outs[0])}, {x}, {p['n']}, {p['c']}, "
            f"{len(p['image'])}, image, {image}, {block}, dil, pads, strides, {p['ck']}, "
            f"{p['len']}) != 0)\n"
            f"    return {printer.prefix}_fail("
            f"{c_string(step.origin + ': the image and block shapes do not fit')});")


@renders("max_unpool", runtime=RUNTIME)
def render_max_unpool(printer, step) -> str:
    p = step.params
    x, idx, *shape = step.ins
    out = step.outs[0]
    shape_ptr = printer.ptr(shape[0], True) if shape else "NULL"
    return (f"static const int64_t inferred[] = {_int_array(p['inferred'])}, ydims[] = "
            f"{_int_array(p['ydims'])};\n"
            f"if (q35_max_unpool({printer.ptr(out)}, {printer.ptr(x, True)}, "
            f"{printer.ptr(idx, True)}, sizeof({ctype(out)}), {x.size}, {len(p['ydims'])}, "
            f"inferred, ydims, {shape_ptr}) != 0)\n"
            f"    return {printer.prefix}_fail("
            f"{c_string(step.origin + ': an index or the output shape does not fit')});")


@renders("roi_align", runtime=RUNTIME)
def render_roi_align(printer, step) -> str:
    p = step.params
    x, rois, idx = (printer.ptr(b, True) for b in step.ins)
    return (f"if (q35_roi_align_f32({printer.ptr(step.outs[0])}, {x}, {rois}, {idx}, "
            f"{p['rois']}, {p['n']}, {p['c']}, {p['h']}, {p['w']}, {p['oh']}, {p['ow']}, "
            f"{p['sampling']}, {_float_literal(p['scale'], 'float')}, {p['half_pixel']}, "
            f"{p['max']}) != 0)\n"
            f"    return {printer.prefix}_fail("
            f"{c_string(step.origin + ': a batch index is out of range')});")
