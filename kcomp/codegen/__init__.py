"""Code generation: a readable Triton module per kernel node (fused expression + launch wrapper)."""
