"""The analyses behind the `verify-quant-error` pass (passes/verify_quant_error.py): the interval
domain, the abstract interpreter over the ops, the matmul error bounds and the report table."""
