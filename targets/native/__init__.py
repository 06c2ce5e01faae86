"""The native lowering shared by the C target (and the planned CUDA target).

    graph IR --lower.py--> Program (steps over buffers, program.py) [--fold.py--> fewer
    copies, C target] --memory.py--> arena and blob offsets --a printer
    (targets/c/printer.py)--> source text

Everything here is independent of the language the program is printed in: buffer
planning, the step list and kernel selection. docs/architecture.md (Targets) and
docs/c-target.md describe it.
"""
