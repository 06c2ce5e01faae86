"""q35c passes, one per file, registered lazily in q35c.compiler.universe."""
