"""Keras's `keras.backend` namespace: what a Keras script calls as `keras.backend.clear_session()`.

Only a facade: the state is kcomp.session's. (A model's executor, which kcomp calls its backend,
is chosen with compile(backend=...): kcomp.runtime.executor.)
"""

from kcomp.session import clear_session, set_random_seed

__all__ = ["clear_session", "set_random_seed"]
