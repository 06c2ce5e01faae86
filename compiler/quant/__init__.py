"""The Q3P5 weight format and the legacy pair layout (numpy, vectorized)."""
