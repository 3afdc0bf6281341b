"""An example auras policy package: ``example-flow``, registered through the ``auras.policies`` entry point.

auras imports :mod:`auras_example_policy.policy` only when a configuration asks for ``example-flow``.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
