"""deeplinear: linear neural networks, their dynamics, theory checks and the notes' experiments.

Importing the package enables float64 in JAX (the theory needs it, §4 pitfall 3).
"""

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
