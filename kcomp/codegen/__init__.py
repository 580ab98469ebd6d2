"""Code generation: a readable Triton module per kernel node (the generated hooks, and a binding
for its template's launch)."""
