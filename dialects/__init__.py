"""q35c dialects: quant3p5 (packed weights) and q35nn (graph ops xDSL lacks)."""
