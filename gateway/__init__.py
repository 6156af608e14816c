"""The Fogline gateway: sources, pipeline engine, operators and outputs at the edge."""
